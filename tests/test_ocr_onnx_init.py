"""A training stage started from the shipped ONNX OCR computes what the shipped model computes
(tools/ocr_onnx_init.py; needs the `train` extra)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.ocr_net import build  # noqa: E402
from tools.ocr_onnx_init import init_from_onnx, onnx_arch  # noqa: E402

SHIPPED_FP32 = ROOT / "models" / "plate_ocr_fp32.onnx"


def _plate_like_samples(count: int) -> torch.Tensor:
    """Dark strokes on a light plate with noise: inputs whose activations resemble a plate's."""
    rng = np.random.default_rng(5)
    images = np.full((count, 1, 48, 144), 200.0, dtype=np.float32)
    for image in images:
        for left in range(10, 130, 19):
            image[0, 10:38, left:left + int(rng.integers(3, 9))] = rng.uniform(10, 60)
    images += rng.normal(0, 12, images.shape).astype(np.float32)
    return torch.from_numpy(images.clip(0, 255))


def test_reconstructed_network_matches_the_shipped_onnx_and_trains_from_there():
    model = build(onnx_arch(SHIPPED_FP32))
    samples = _plate_like_samples(96)
    gap = init_from_onnx(model, "base", SHIPPED_FP32, samples)
    assert gap < 1e-4
    # In train mode the norms use batch statistics; on the batches they were measured on, those
    # are the measured ones, so training starts from the same function, not a scrambled one.
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()  # dropout is noise by design; the norms are what is checked
    with torch.no_grad():
        trained_mode = model(samples)
    model.eval()
    with torch.no_grad():
        eval_mode = model(samples)
    assert float((trained_mode - eval_mode).abs().max()) < 1e-3


def test_a_network_of_another_size_is_refused_with_the_size_it_holds():
    with pytest.raises(ValueError, match="holds the 'base' network, not 'small'"):
        init_from_onnx(build("small"), "small", SHIPPED_FP32, _plate_like_samples(4))


def test_the_int8_model_and_other_networks_are_refused_with_what_to_use_instead():
    entry = json.loads((ROOT / "models" / "manifest.json").read_text())["models"]["plate_ocr"]
    int8_file = entry["file"] if entry["precision"] == "int8" else entry["file_int8"]
    with pytest.raises(ValueError, match="start from its fp32 twin"):
        onnx_arch(ROOT / "models" / int8_file)
    with pytest.raises(ValueError, match="not a plate OCR network"):
        onnx_arch(ROOT / "models" / "plate_detector.onnx")
