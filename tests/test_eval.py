"""Evaluation helpers: region hints, box matching for scenes, crop geometry."""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.vision.crops import (OCR_INPUT_HEIGHT, OCR_INPUT_WIDTH, crop_for_ocr,  # noqa: E402
                                to_model_input)
from agent.vision.evaluate import dataset_region, evaluate, iou, load_crops  # noqa: E402
from agent.vision.models import load_manifest  # noqa: E402
from agent.vision.ocr import PlateReader, resolve  # noqa: E402
from agent.vision.plate_formats import formats_for  # noqa: E402
from agent.vision.recognizer import Recognizer  # noqa: E402
from ctc_probs import one_hot_probs  # noqa: E402
from tools.synth.render import render_plate  # noqa: E402

MODELS = Path(os.environ.get("PLATEGATE_MODELS") or Path(__file__).resolve().parents[1] / "models")


def test_dataset_region_hint():
    assert dataset_region(["br", "br"]) == "br"
    assert dataset_region(["ca", "ny", "tx"]) == "US"
    assert dataset_region([]) is None
    assert {f.region for f in formats_for("US")} == {"US"}
    assert {f.region for f in formats_for("br")} == {"BR"}
    assert {f.region for f in formats_for("ca")} == {"US"}  # a US state code


def test_crops_of_several_states_each_carry_their_own_state(tmp_path):
    """A crop's own state is its hint (state rules hold for one state; "ar" alone would be
    Argentina); a one-region set keeps its code."""
    (tmp_path / "groundtruth.csv").write_text("a.jpg,fl,CUST0M\nb.jpg,ar,ABC123\n")
    assert [item.region for item in load_crops(tmp_path)] == ["US-FL", "US-AR"]
    (tmp_path / "groundtruth.csv").write_text("a.jpg,br,ABC1234\n")
    assert [item.region for item in load_crops(tmp_path)] == ["br"]


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 50 / 150) < 1e-9


def test_crop_margin_and_clipping():
    frame = np.zeros((100, 200, 3), np.uint8)
    crop = crop_for_ocr(frame, (50, 40, 100, 20))
    assert crop.shape[:2] == (20 + 2 * 3, 100 + 2 * 10)
    edge = crop_for_ocr(frame, (0, 0, 50, 20))  # margin clipped at the frame border
    assert edge.shape[:2] == (23, 55)
    with pytest.raises(ValueError, match="empty"):
        crop_for_ocr(frame, (250, 10, 10, 10))


def test_crop_rectifies_corners():
    frame = np.zeros((200, 300, 3), np.uint8)
    corners = [(50, 60), (250, 80), (250, 130), (50, 110)]
    cv2.fillPoly(frame, [np.array(corners, np.int32)], (255, 255, 255))
    crop = crop_for_ocr(frame, (50, 60, 200, 70), corners)
    h, w = crop.shape[:2]
    assert w > h * 2
    inner = crop[int(h * 0.3):int(h * 0.7), int(w * 0.2):int(w * 0.8)]
    assert inner.mean() > 240  # the plate fills the middle once rectified


def test_model_input_shape():
    x = to_model_input(np.zeros((160, 320, 3), np.uint8))
    assert x.shape == (1, 1, OCR_INPUT_HEIGHT, OCR_INPUT_WIDTH) and x.dtype == np.float32
    assert to_model_input(np.zeros((20, 40), np.uint8)).shape == x.shape


@dataclass
class _Detection:
    box: tuple[int, int, int, int]
    score: float = 0.9
    corners: list | None = None


class _BoxesFromLabels:
    """Stands in for the detector: returns one known box, to test the scene matching."""

    def __init__(self, box):
        self.box = box

    def detect(self, frame_bgr):
        return [_Detection(self.box)]


def test_scene_matching_counts_recall(tmp_path):
    entry = load_manifest(MODELS)["models"]["plate_ocr"]
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(MODELS / entry["file"], models / entry["file"])
    (models / "manifest.json").write_text(json.dumps({"models": {"plate_ocr": entry}}))
    folder = tmp_path / "scenes"
    folder.mkdir()
    frame = np.full((300, 400, 3), 90, np.uint8)
    plate = render_plate(np.random.default_rng(1), "ABC1234", "ABC-1234", "BR", "br.old").image
    plate = cv2.resize((plate * 255).astype(np.uint8), (180, 58))
    frame[200:258, 100:280] = plate
    cv2.imwrite(str(folder / "a.jpg"), frame)
    (folder / "a.txt").write_text("a.jpg\t100\t200\t180\t58\tABC-1234\n")
    cv2.imwrite(str(folder / "b.jpg"), frame)
    (folder / "b.txt").write_text("b.jpg\t10\t10\t50\t20\tXYZ9999\n")  # nothing detected there
    rec = Recognizer(PlateReader.from_models(models), _BoxesFromLabels((100, 200, 180, 58)))
    report = evaluate(folder, rec).to_json()
    assert report["format"] == "scenes"
    assert report["images"] == 2 and report["plates"] == 2
    assert report["detection_recall"] == 0.5
    assert report["top1_accuracy"] <= 0.5


class _SureReader:
    """Stands in for the OCR model: always sure of one text (here I for every 1, as the grey
    Brazilian plates draw it); the real decoding and format tables do the rest."""

    def __init__(self, text: str):
        self.probs = one_hot_probs(text)

    def read(self, crop, region=None):
        return resolve(self.probs, region)


def test_region_hint_comes_from_the_call_then_the_unit(tmp_path):
    """A unit configured for Brazil reads the bar in a digit position as 1; eval --region does
    the same for a scenes set, which carries no region; with no hint the read stays as seen."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), np.full((120, 200, 3), 90, np.uint8))
    (folder / "a.txt").write_text("a.jpg\t20\t20\t120\t40\tAXO7916\n")
    frame = np.zeros((120, 200, 3), np.uint8)
    plain = Recognizer(_SureReader("AXO79I6"), _BoxesFromLabels((20, 20, 120, 40)))
    assert plain.recognize(frame)[0].text == "AXO79I6"
    assert plain.recognize(frame, "BR")[0].text == "AXO7916"
    assert evaluate(folder, plain).to_json()["top1_accuracy"] == 0.0
    assert evaluate(folder, plain, region="BR").to_json()["top1_accuracy"] == 1.0
    unit = Recognizer(_SureReader("AXO79I6"), _BoxesFromLabels((20, 20, 120, 40)), region="BR")
    assert unit.recognize(frame)[0].text == "AXO7916"
    assert unit.read_crop(frame).text == "AXO7916"


class _ScaledReader(_SureReader):
    """A sure reader whose confidence is scaled down (one_hot gives 1.0)."""

    def __init__(self, text: str, confidence: float):
        super().__init__(text)
        self.confidence = confidence

    def read(self, crop, region=None):
        out = resolve(self.probs, region)
        out.confidence = self.confidence
        return out


def _crops_set(tmp_path, rows: str):
    folder = tmp_path / "crops"
    folder.mkdir(exist_ok=True)
    for name in {r.split(",")[0] for r in rows.splitlines()}:
        cv2.imwrite(str(folder / name), np.full((40, 120, 3), 90, np.uint8))
    (folder / "groundtruth.csv").write_text(rows)
    return folder


def test_accepted_rates_follow_the_configured_cut(tmp_path):
    """accepted.correct_rate is right-and-accepted over all plates, accepted.wrong_rate is
    wrong-and-accepted over all accepted reads; both move with the cut the config sets."""
    from agent.config.schema import RecognizerConfig
    folder = _crops_set(tmp_path, "a.jpg,us,ABC1234\nb.jpg,us,ABC1235\nc.jpg,us,XYZ9999\n")
    rec = Recognizer(_ScaledReader("ABC1234", 0.8))
    report = evaluate(folder, rec).to_json()
    assert report["top1_accuracy"] == round(1 / 3, 4)
    acc = report["accepted"]
    assert (acc["correct"], acc["wrong"]) == (1, 2)  # 0.8 passes the default 0.7 cut
    assert acc["correct_rate"] == round(1 / 3, 4) and acc["wrong_rate"] == round(2 / 3, 4)
    assert acc["cut"]["min_confidence"] == 0.7
    strict = RecognizerConfig(min_confidence=0.9)
    acc = evaluate(folder, rec, cut=strict).to_json()["accepted"]
    assert (acc["correct"], acc["wrong"], acc["correct_rate"], acc["wrong_rate"]) == (0, 0, 0.0,
                                                                                      None)


def test_eval_cli_takes_the_cut_from_a_config(tmp_path):
    """`plategate eval --config` reports the cut of the config's recognizer section, and a
    config that cannot be used is one clear error with exit 2."""
    import subprocess
    import sys as _sys
    folder = _crops_set(tmp_path, "a.jpg,us,ABC1234\n")
    cfg = tmp_path / "unit.toml"
    source = f'[source]\nkind = "image_folder"\npath = "{tmp_path}"\n'
    cfg.write_text(source + '[recognizer]\nmin_confidence = 0.95\nregion = "US-MO"\n')
    run = subprocess.run([_sys.executable, "-m", "agent", "eval", str(folder), "--json",
                          "--config", str(cfg), "--models", str(MODELS)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["accepted"]["cut"]["min_confidence"] == 0.95
    cfg.write_text(source + '[recognizer]\nmin_confidence = 7\n')
    run = subprocess.run([_sys.executable, "-m", "agent", "eval", str(folder), "--json",
                          "--config", str(cfg), "--models", str(MODELS)],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "recognizer.min_confidence" in run.stderr
