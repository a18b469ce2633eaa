"""``plategate recognize`` and ``plategate eval`` output shapes and bad-input handling."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.cli import main  # noqa: E402
from tools.synth.render import render_plate  # noqa: E402



def _plate_image(path: Path, text: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    plate = render_plate(rng, text, text, "BR", "br.old").image
    cv2.imwrite(str(path), (plate * 255).astype(np.uint8))


def _crops_set(folder: Path) -> None:
    folder.mkdir()
    rows = []
    for i, text in enumerate(("ABC1234", "XYZ9876", "KLM5050")):
        _plate_image(folder / f"p{i}.jpg", text, i)
        rows.append(f"p{i}.jpg,br,{text}")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rows.append("broken.jpg,br,AAA1111")
    (folder / "empty.jpg").write_bytes(b"")
    rows.append("empty.jpg,br,BBB2222")
    (folder / "groundtruth.csv").write_text("\n".join(rows) + "\n")


def test_recognize_json_shape_and_corrupt_file(tmp_path, ocr_models, capsys):
    good = tmp_path / "plate.png"
    _plate_image(good, "ABC1234")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00" * 10)
    code = main(["recognize", "--models", str(ocr_models), "--crop", "--json", str(good),
                 str(bad), str(tmp_path / "missing.jpg")])
    out = capsys.readouterr()
    lines = [json.loads(x) for x in out.out.splitlines()]
    assert code == 1  # some files failed, the others were still read
    assert [x["image"] for x in lines] == [str(good), str(bad), str(tmp_path / "missing.jpg")]
    first = lines[0]
    assert isinstance(first["ms"], float)
    assert len(first["plates"]) == 1
    plate = first["plates"][0]
    assert set(plate) == {"text", "confidence", "box", "candidates"}
    assert plate["box"] == [0, 0, *cv2.imread(str(good)).shape[1::-1]]
    assert all(set(c) == {"text", "confidence"} for c in plate["candidates"])
    assert 1 <= len(plate["candidates"]) <= 5
    assert "error" in lines[1] and str(bad) in lines[1]["error"]
    assert "error" in lines[2]
    assert str(bad) in out.err


def test_recognize_frames_without_detector_says_so(tmp_path, ocr_models, capsys):
    img = tmp_path / "scene.png"
    _plate_image(img, "ABC1234")
    code = main(["recognize", "--models", str(ocr_models), str(img)])
    assert code == 2
    assert "no plate detector" in capsys.readouterr().err


def test_eval_crops_json_contract(tmp_path, ocr_models, capsys):
    _crops_set(tmp_path / "set")
    code = main(["eval", "--models", str(ocr_models), "--json", str(tmp_path / "set")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("format", "images", "plates", "detection_recall", "top1_accuracy",
                "top5_accuracy", "ms_per_image"):
        assert key in report, key
    assert report["format"] == "crops"
    assert report["images"] == 5 and report["plates"] == 5
    assert report["detection_recall"] is None
    assert 0.0 <= report["top1_accuracy"] <= report["top5_accuracy"] <= 1.0
    assert set(report["ms_per_image"]) == {"median", "p90"}
    assert len(report["errors"]) == 2
    assert any("empty" in e["error"] for e in report["errors"])
    assert any("broken.jpg" in e["error"] for e in report["errors"])


def test_eval_scenes_without_detector_says_so(tmp_path, ocr_models, capsys):
    folder = tmp_path / "scenes"
    folder.mkdir()
    _plate_image(folder / "a.jpg", "ABC1234")
    (folder / "a.txt").write_text("a.jpg\t0\t0\t10\t10\tABC1234\n")
    code = main(["eval", "--models", str(ocr_models), "--json", str(folder)])
    assert code == 2
    assert "needs the plate detector" in capsys.readouterr().err


def test_eval_not_a_dataset(tmp_path, ocr_models, capsys):
    code = main(["eval", "--models", str(ocr_models), str(tmp_path)])
    assert code == 2
    assert "neither a crops set" in capsys.readouterr().err
