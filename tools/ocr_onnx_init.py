"""Start an OCR training stage from a shipped ONNX model instead of a torch checkpoint.

Why: checkpoints stay out of git, so a new session (or a new engineer) holds only the ONNX
files in `models/`. The export folds each batch norm into the convolution before it, so the
ONNX weights are ``W' = W * g / s`` with a bias ``b' = beta - mean * g / s``. The split
between ``W`` and the norm is lost, but it is not needed: measuring each convolution's output
(``W' x``, no bias) on training samples gives a mean ``m`` and deviation ``d`` per channel,
and the norm set to running mean ``m``, running variance ``d**2``, weight ``d`` and bias
``b' + m`` computes exactly ``W' x + b'`` in eval mode, while in train mode (batch
statistics close to ``m`` and ``d``) it starts near the same function and keeps the norm's
effect on the training dynamics. `tools/train_ocr.py --init models/plate_ocr_fp32.onnx`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from agent.vision.models import cpu_session
from tools.ocr_net import ARCHS, PlateCRNN

_BN_EPS_FLOOR = 1e-6  # a channel that never fires keeps a finite norm


def _onnx_convs(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Module path (``features.0``, ``classifier``) -> (weight, bias) of each ONNX Conv."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # protobuf's DecodeError, OSError: one message either way
        raise ValueError(f"{path}: not a readable ONNX model ({exc})") from None
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    convs = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        # torch's exporter names nodes after the module: /features/features.0/Conv
        parts = node.name.strip("/").split("/")
        module = parts[-2] if len(parts) >= 3 else parts[0]
        if any(name not in inits for name in node.input[1:3]):
            raise ValueError(f"{path}: convolution {node.name} has no float weights (an int8 "
                             "model? start from its fp32 twin, models/plate_ocr_fp32.onnx)")
        weight, bias = (inits[name] for name in node.input[1:3])
        convs[module] = (weight, bias)
    return convs


def onnx_arch(path: Path) -> str:
    """The ``ARCHS`` size whose layer widths match the ONNX model's convolutions."""
    return _arch_of(_onnx_convs(path), path)


def check_arch(path: Path, arch: str) -> None:
    """Refuse (ValueError naming the size to pass) an ONNX model that is not of size ``arch``;
    train_ocr calls it before loading minutes of data, init_from_onnx again on its own."""
    _require_arch(_onnx_convs(path), path, arch)


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
    convs = _onnx_convs(path)
    _require_arch(convs, path, arch)
    modules = dict(model.named_modules())
    pairs: list[tuple[nn.Module, nn.Module]] = []
    for name, (weight, bias) in convs.items():
        conv = modules[name]
        conv.weight.data = torch.from_numpy(weight.copy())
        if conv.bias is not None:  # the classifier: no norm follows it
            conv.bias.data = torch.from_numpy(bias.copy())
            continue
        prefix, index = name.rsplit(".", 1)
        norm = modules[f"{prefix}.{int(index) + 1}"]
        # Identity norm first, so the measuring pass computes the ONNX function exactly.
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0 - norm.eps)
        norm.weight.data.fill_(1.0)
        norm.bias.data = torch.from_numpy(bias.copy())
        pairs.append((conv, norm))

    stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def measure(conv: nn.Module, _inputs, output: torch.Tensor) -> None:
        dims = [d for d in range(output.dim()) if d != 1]
        stats[conv] = (output.mean(dim=dims), output.var(dim=dims, unbiased=False))

    hooks = [conv.register_forward_hook(measure) for conv, _ in pairs]
    model.eval()
    with torch.no_grad():
        model(samples)
    for hook in hooks:
        hook.remove()
    for conv, norm in pairs:
        mean, var = stats[conv]
        var = var.clamp_min(_BN_EPS_FLOOR)
        scale = torch.sqrt(var + norm.eps)
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
        norm.weight.data = scale.clone()
        norm.bias.data = norm.bias.data + mean
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
