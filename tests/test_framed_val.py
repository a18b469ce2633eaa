"""Detector-framed validation data (issue 20): plate-text val crops are traced back to the val
scene plate they were cut from, never to an augmented copy, and tight framings grow the box."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.framed_val import tight_cut, trace  # noqa: E402
from tools.val_data import plate_text_val  # noqa: E402


def _write(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_crops_are_traced_to_their_scene_plate(tmp_path):
    crop = np.full((30, 100, 3), 128, np.uint8)
    (tmp_path / "plate-text" / "images").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "plate-text" / "images" / "abc_1.jpg"), crop)
    cv2.imwrite(str(tmp_path / "plate-text" / "images" / "zzz_0.jpg"), crop)
    _write(tmp_path / "plate-text", [
        {"image": "images/abc_1.jpg", "split": "val", "source_id": "abc", "region": "US-MO",
         "source_dataset": "kaggle-plates", "layout": "one_row",
         "plates": [{"box": [5, 5, 90, 20], "text": "AB1C2D"}]},
        {"image": "images/zzz_0.jpg", "split": "val", "source_id": "zzz", "region": "EU",
         "source_dataset": "kaggle-plates", "layout": "one_row",
         "plates": [{"box": [5, 5, 90, 20], "text": "NOSCENE"}]},
        {"image": "images/abc_1.jpg", "split": "train", "source_id": "abc", "region": "US",
         "source_dataset": "kaggle-plates", "plates": [{"box": [5, 5, 90, 20], "text": "X"}]}])
    _write(tmp_path / "kaggle-plates", [
        {"image": "images/abc.jpg", "split": "val", "source_id": "abc",
         "plates": [{"box": [0, 0, 40, 40], "text": None}, {"box": [10, 10, 45, 10], "text": None}]},
        {"image": "images/abc_aug1.jpg", "split": "val", "source_id": "abc",
         "plates": [{"box": [3, 3, 45, 10], "text": None}]}])
    crops = plate_text_val(tmp_path)
    assert [(c.text, c.hint, c.index) for c in crops] == [("AB1C2D", "US-MO", 1),
                                                          ("NOSCENE", "EU", 0)]
    traced = trace(crops, tmp_path)
    assert len(traced) == 1  # the EU crop has no scene; the augmented copy is never used
    assert traced[0].scene.name == "abc.jpg" and traced[0].box == (10, 10, 45, 10)


def test_tight_cut_grows_the_box_and_clips():
    frame = np.zeros((100, 200), np.uint8)
    assert tight_cut(frame, (50, 40, 100, 20), 0.0).shape == (20, 100)
    assert tight_cut(frame, (50, 40, 100, 20), 0.1).shape == (24, 120)
    assert tight_cut(frame, (0, 0, 100, 20), 0.1).shape == (22, 110)


def test_operating_point_rates_count_plates_and_accepted_reads():
    """correct_rate is over all plates (a missed plate counts), wrong_rate over accepted reads."""
    from agent.config.schema import RecognizerConfig
    from agent.vision.recognizer import PlateHit
    from tools.operating_point import rates

    def hit(text, conf, fmt="us.LLL-DDDD"):
        return PlateHit(text, conf, (0, 0, 1, 1), format=fmt)

    pairs = [("ABC1234", hit("ABC1234", 0.9)), ("ABC1235", hit("ABC1236", 0.8)),
             ("XYZ1234", hit("XYZ1234", 0.5)), ("MISSED1", None),
             ("SIGN", hit("SIGN", 0.8, fmt=None))]  # no format: needs 0.9
    out = rates(pairs, RecognizerConfig())
    assert out == {"correct_rate": 0.2, "wrong_rate": 0.5, "wrong": 1}


def test_training_crops_load_and_evaluation_sets_are_refused(tmp_path):
    from tools.val_data import EvaluationSetError, training_crops
    ok = tmp_path / "framed_train"
    ok.mkdir()
    cv2.imwrite(str(ok / "0000.png"), np.full((30, 90), 200, np.uint8))
    (ok / "groundtruth.csv").write_text("0000.png,ca,1ABC234\n")
    images, texts = training_crops(ok)
    assert texts == ["1ABC234"] and images[0].shape == (30, 90)
    bad = tmp_path / "eval-us-crops"
    bad.mkdir()
    (bad / "groundtruth.csv").write_text("a.png,ca,1ABC234\n")
    try:
        training_crops(bad)
    except EvaluationSetError as exc:
        assert "eval-us-crops" in str(exc)
    else:
        raise AssertionError("an evaluation set was accepted as training data")
    link = tmp_path / "innocent"
    link.symlink_to(bad)  # a link does not hide where the crops come from
    try:
        training_crops(link)
    except EvaluationSetError:
        pass
    else:
        raise AssertionError("a link to an evaluation set was accepted")


def test_a_scene_resized_to_a_camera_frame_keeps_its_plate_box_on_the_plate(tmp_path):
    from tools.framed_val import Traced, scene_frame

    scene = np.zeros((300, 400, 3), np.uint8)
    scene[100:130, 50:150] = 255  # the plate
    cv2.imwrite(str(tmp_path / "scene.png"), scene)
    traced = Traced(crop=None, scene=tmp_path / "scene.png", box=(50, 100, 100, 30))
    frame, box = scene_frame(traced, (3840, 2160))
    assert frame.shape == (2160, 3840, 3)
    assert box == (480, 720, 960, 216)
    x, y, w, h = box
    assert frame[y + 5:y + h - 5, x + 5:x + w - 5].min() == 255
    assert scene_frame(traced)[1] == (50, 100, 100, 30)


def test_a_missing_datasets_folder_is_one_line_naming_the_file(tmp_path, capsys):
    from tools.framed_val import main

    with pytest.raises(SystemExit) as stop:
        main(["--datasets", str(tmp_path / "nowhere")])
    assert "nowhere/plate-text/labels.jsonl: no such file" in str(stop.value)


def test_a_wrong_models_folder_is_one_usage_line(tmp_path, capsys):
    from tools.deblur_rule import main as deblur_rule
    from tools.framed_val import main as framed_val

    for tool in (framed_val, deblur_rule):
        with pytest.raises(SystemExit) as stop:
            tool(["--models", str(tmp_path)])
        assert stop.value.code == 2
        assert f"{tmp_path}: not a models folder" in capsys.readouterr().err
