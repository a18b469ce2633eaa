"""tools/quantise_detector.py: the detector's int8 twin is made from the real model, keeps the
stem and both heads in fp32, is calibrated on TRAINING scenes as the agent feeds them, finds the
plates the fp32 model finds, and a written folder loads both precisions hash-checked."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from agent.vision.detector import MODEL_NAME, PlateDetector
from agent.vision.models import ModelError, file_sha256, model_entry, open_session
from helpers.paths import MODELS
from helpers.scenes import scene_with_plate
from tools.val_data import DATASETS  # ../shared/datasets, or $PLATEGATE_DATASETS

onnx = pytest.importorskip("onnx")  # the test extra installs it; quantising needs it

from tools import quantise_detector as qd  # noqa: E402

needs_datasets = pytest.mark.skipif(not (DATASETS / "open-images-plates").is_dir(),
                                    reason="../shared/datasets is not present")


def _fp32_path() -> Path:
    entry = model_entry(MODELS, MODEL_NAME)
    return MODELS / entry["file_fp32" if entry.get("precision") == "int8" else "file"]


def test_fp32_islands_are_the_input_convolution_and_both_heads():
    graph = onnx.load(str(_fp32_path())).graph
    by_name = {n.name: n for n in graph.node}
    islands = qd.fp32_islands(_fp32_path())
    assert all(name in by_name for name in islands)
    stems = [by_name[n] for n in islands if graph.input[0].name in by_name[n].input]
    assert [n.op_type for n in stems] == ["Conv"]
    outputs = {o for n in islands for o in by_name[n].output}
    assert {"heat", "reg"} <= outputs  # the sigmoid giving heat, the conv giving reg
    heat_convs = [by_name[n] for n in islands if by_name[n].op_type == "Conv"
                  and by_name[n] not in stems]
    assert len(heat_convs) == 2  # the 1x1 convolutions of heat and reg, nothing deeper


@needs_datasets
def test_calibration_is_what_the_detector_feeds_on_training_scenes():
    session, entry = open_session(MODELS, MODEL_NAME,
                                  file_key="file_fp32" if model_entry(MODELS, MODEL_NAME)
                                  .get("precision") == "int8" else "file")
    windows = qd.calibration_tensors(session, entry, DATASETS, per_set=1)
    assert len(windows) >= 4  # one scene per training set, one window per pass
    for w in windows:
        assert w.shape == (1, 3, qd.WINDOW, qd.WINDOW) and w.dtype == np.float32
        # normalised pixels: (x / 255 - 0.5) / 0.25 lies in [-2, 2]
        assert -2.0 <= float(w.min()) and float(w.max()) <= 2.0


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> Path:
    if not (DATASETS / "open-images-plates").is_dir():
        pytest.skip("../shared/datasets is not present")
    out = tmp_path_factory.mktemp("int8") / "plate_detector_int8.onnx"
    session, entry = open_session(MODELS, MODEL_NAME,
                                  file_key="file_fp32" if model_entry(MODELS, MODEL_NAME)
                                  .get("precision") == "int8" else "file")
    windows = qd.calibration_tensors(session, entry, DATASETS, per_set=2)
    qd.quantise(_fp32_path(), out, windows, op_types=None,
                nodes_to_exclude=qd.fp32_islands(_fp32_path()), percentile=qd.PERCENTILE)
    return out


def test_int8_model_quantises_all_but_the_islands(int8_model):
    graph = onnx.load(str(int8_model)).graph
    producer = {o: n for n in graph.node for o in n.output}
    islands = set(qd.fp32_islands(_fp32_path()))
    convs = [n for n in graph.node if n.op_type == "Conv"]
    for conv in convs:
        weight_from = producer.get(conv.input[1])
        quantised = weight_from is not None and weight_from.op_type == "DequantizeLinear"
        assert quantised == (conv.name not in islands), conv.name
    assert int8_model.stat().st_size < 5 * 1024 * 1024


def test_int8_model_finds_the_plates_the_fp32_model_finds(int8_model):
    import onnxruntime as ort

    entry = model_entry(MODELS, MODEL_NAME)
    fp32 = PlateDetector.from_models(MODELS, file_key="file_fp32"
                                     if entry.get("precision") == "int8" else "file")
    int8 = PlateDetector(ort.InferenceSession(str(int8_model),
                                              providers=["CPUExecutionProvider"]), entry)
    for plate_w, (h, w) in ((120, (720, 1280)), (60, (720, 1280)), (200, (1080, 1920))):
        frame, _ = scene_with_plate(h, w, plate_w, cx=w // 2 + 37, cy=int(h * 0.6))
        a, b = fp32.detect(frame), int8.detect(frame)
        assert len(a) == len(b) and a, (plate_w, a, b)
        for x, y in zip(a, b):
            assert max(abs(p - q) for p, q in zip(x.box, y.box)) <= 0.1 * x.box[2] + 2
            assert abs(x.score - y.score) < 0.05


def _written(tmp_path: Path, int8_model: Path) -> Path:
    args = argparse.Namespace(models=MODELS, calib_scenes=2, version="test")
    report = {"calibration": {"fp32_nodes": qd.fp32_islands(_fp32_path())},
              "load_average": [0.0, 0.0, 0.0],
              "fp32": {"training_val": {}, "framed_val": {}},
              "int8": {"training_val": {"recall": 0.5}, "framed_val": {"top1": 0.5}}}
    out = tmp_path / "models"
    qd.write(args, out, model_entry(MODELS, MODEL_NAME), _fp32_path(), int8_model, report)
    return out


def test_written_folder_loads_both_precisions_hash_checked(tmp_path, int8_model):
    out = _written(tmp_path, int8_model)
    entry = json.loads((out / "manifest.json").read_text())["models"][MODEL_NAME]
    assert entry["precision"] == "int8" and entry["file_fp32"] == qd.FP32_FILE
    assert file_sha256(out / entry["file"]) == entry["sha256"] == file_sha256(int8_model)
    assert file_sha256(out / qd.FP32_FILE) == file_sha256(_fp32_path())
    assert entry["input"] == model_entry(MODELS, MODEL_NAME)["input"]  # preprocessing kept
    assert "not retrained" in entry["quantization"]["from"]
    assert PlateDetector.from_models(out).session is not None
    assert PlateDetector.from_models(out, file_key="file_fp32").session is not None


def test_swapped_fp32_twin_is_refused_naming_the_file(tmp_path, int8_model):
    out = _written(tmp_path, int8_model)
    (out / qd.FP32_FILE).write_bytes(int8_model.read_bytes())
    with pytest.raises(ModelError) as err:
        PlateDetector.from_models(out, file_key="file_fp32")
    assert str(out / qd.FP32_FILE) in str(err.value) and "sha256" in str(err.value)


def test_candidate_folder_may_not_be_the_models_folder(capsys):
    """--candidate is written even when the rule fails, so it must never be models/ itself."""
    with pytest.raises(SystemExit) as stop:
        qd.main(["--models", str(MODELS), "--candidate", str(MODELS)])
    assert stop.value.code == 2
    assert "--candidate" in capsys.readouterr().err
