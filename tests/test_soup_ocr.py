"""Weight interpolation of two OCR models (tools/soup_ocr.py): the ends are the models
themselves, the middle is the mean, and two different networks are refused."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.soup_ocr import main, soup  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {w.name: numpy_helper.to_array(w) for w in model.graph.initializer}


def _shifted(model: onnx.ModelProto, by: float) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for w in out.graph.initializer:
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) + np.float32(by), w.name))
    return out


def test_the_ends_are_the_models_and_the_middle_is_their_mean():
    start = onnx.load(str(MODELS / "plate_ocr_fp32.onnx"))
    tuned = _shifted(start, 1.0)
    a, b = _weights(start), _weights(tuned)
    for share, expect in ((0.0, a), (1.0, b)):
        got = _weights(soup(start, tuned, share))
        assert all(np.allclose(got[k], expect[k], atol=1e-6) for k in a)
    middle = _weights(soup(start, tuned, 0.5))
    assert all(np.allclose(middle[k], a[k] + 0.5, atol=1e-5) for k in a)


def test_different_networks_and_shares_out_of_range_are_refused(tmp_path, capsys):
    out = tmp_path / "soup.onnx"
    with pytest.raises(SystemExit) as stop:
        main([str(MODELS / "plate_ocr_fp32.onnx"), str(MODELS / "plate_detector.onnx"),
              "--share", "0.5", "--out", str(out)])
    assert stop.value.code == 2 and "not the same network" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(MODELS / "plate_ocr_fp32.onnx"), str(MODELS / "plate_ocr_fp32.onnx"),
              "--share", "1.5", "--out", str(out)])
    assert "between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.onnx"), str(MODELS / "plate_ocr_fp32.onnx"),
              "--share", "0.5", "--out", str(out)])
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert not out.exists()
