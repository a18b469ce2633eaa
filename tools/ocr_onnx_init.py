"""Start an OCR training stage from a shipped ONNX model instead of a torch checkpoint.

`tools/train_ocr.py --init models/plate_ocr_fp32.onnx`. The weights and their folded batch
norms are loaded by `tools/onnx_init.py` (which says why that is exact); this module adds the
OCR's own check that the file holds the network size being trained.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agent.vision.models import cpu_session
from tools.ocr_net import ARCHS, PlateCRNN
from tools.onnx_init import load_folded_convs, onnx_convs


def onnx_arch(path: Path) -> str:
    """The ``ARCHS`` size whose layer widths match the ONNX model's convolutions."""
    return _arch_of(onnx_convs(path), path)


def check_arch(path: Path, arch: str) -> None:
    """Refuse (ValueError naming the size to pass) an ONNX model that is not of size ``arch``;
    train_ocr calls it before loading minutes of data, init_from_onnx again on its own."""
    _require_arch(onnx_convs(path), path, arch)


def _require_arch(convs: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, arch: str) -> None:
    held = _arch_of(convs, path)
    if held != arch:
        raise ValueError(f"{path}: holds the {held!r} network, not {arch!r} (pass --arch {held})")


def _arch_of(convs: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> str:
    expected = [f"features.{i}" for i in (0, 3, 6, 10, 14, 17)]
    if any(name not in convs for name in expected):
        raise ValueError(f"{path}: not a plate OCR network (tools/ocr_net.py): its convolutions "
                         f"are {', '.join(sorted(convs)[:6])}...")
    widths = tuple(convs[f"features.{i}"][0].shape[0] for i in (0, 3, 6, 10, 14))
    seq = convs["features.17"][0].shape[0]
    for name, spec in ARCHS.items():
        if tuple(spec["width"]) == widths and spec["seq"] == seq:
            return name
    raise ValueError(f"{path}: layer widths {widths} / {seq} match no known OCR architecture")


def init_from_onnx(model: PlateCRNN, arch: str, path: Path, samples: torch.Tensor) -> float:
    """Load ``path``'s weights into ``model`` (size ``arch``), re-deriving each batch norm from
    the convolution outputs on ``samples`` ([N, 1, 48, 144], training data). Returns the
    largest difference between this model's and the ONNX model's probabilities on them."""
    convs = onnx_convs(path)
    _require_arch(convs, path, arch)
    load_folded_convs(model, convs, samples)
    return _largest_difference(model, path, samples)


def _largest_difference(model: PlateCRNN, path: Path, samples: torch.Tensor) -> float:
    session = cpu_session(path)
    name = session.get_inputs()[0].name
    some = samples[:64]  # the shipped model takes one crop at a time
    theirs = np.concatenate([session.run(None, {name: one[None].numpy()})[0] for one in some])
    model.eval()
    with torch.no_grad():
        ours = model(some).numpy()
    return float(np.abs(ours - theirs).max())
