"""``plategate recognize`` and ``plategate eval`` output shapes and bad-input handling."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.cli import main  # noqa: E402
from tools.synth.render import render_plate  # noqa: E402



def _plate_image(path: Path, text: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    plate = render_plate(rng, text, text, "BR", "br.old").image
    cv2.imwrite(str(path), (plate * 255).astype(np.uint8))


def _clear_plate(path: Path, text: str) -> None:
    """Black text on white, which the OCR reads with confidence well above the cut."""
    image = np.full((40, 160, 3), 255, np.uint8)
    cv2.putText(image, text, (5, 32), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 3)
    cv2.imwrite(str(path), image)


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
    code = main(["recognize", "--models", str(ocr_models), "--crop", "--json", "--all", str(good),
                 str(bad), str(tmp_path / "missing.jpg")])
    out = capsys.readouterr()
    lines = [json.loads(x) for x in out.out.splitlines()]
    assert code == 1  # some files failed, the others were still read
    assert [x["image"] for x in lines] == [str(good), str(bad), str(tmp_path / "missing.jpg")]
    first = lines[0]
    assert isinstance(first["ms"], float)
    assert len(first["plates"]) == 1
    plate = first["plates"][0]
    assert set(plate) == {"text", "confidence", "box", "candidates", "accepted"}
    assert isinstance(plate["accepted"], bool) and first["hidden_below_cut"] == 0
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


def test_recognize_marks_reads_below_the_agents_cut(tmp_path, ocr_models, capsys):
    """Regression (issue 14, item 9): `recognize` printed reads the agent throws away (e.g.
    `6O (0.00)`) with no sign of it. By default it now shows only what a unit would keep and
    says how many it hid; --all shows the rest, marked."""
    good, noise = tmp_path / "plate.png", tmp_path / "noise.png"
    _clear_plate(good, "ABC1234")
    cv2.imwrite(str(noise), (np.random.default_rng(1).random((40, 160, 3)) * 255).astype(np.uint8))
    args = ["recognize", "--models", str(ocr_models), "--crop", str(good), str(noise)]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{good}: ABC1234 (") and "cut" not in lines[0]
    assert lines[1].startswith(f"{noise}: no plate (1 below the agent's cut; --all shows them)")
    assert main(args + ["--all"]) == 0
    shown = capsys.readouterr().out.splitlines()[1]
    assert shown.startswith(f"{noise}: ") and "below the agent's cut)" in shown
    assert main(args + ["--all", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [p["accepted"] for r in rows for p in r["plates"]] == [True, False]
    assert main(args + ["--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rows[1]["plates"] == [] and rows[1]["hidden_below_cut"] == 1


def test_region_and_threads_are_checked_like_the_config(tmp_path, ocr_models, capsys):
    """Regression (issue 14, item 9): --region and --threads took any value; they now give the
    reason recognizer.region / recognizer.threads give in a config."""
    from agent.config.loader import ConfigError, parse_config

    def config_reason(key: str, value: str) -> str:
        with pytest.raises(ConfigError) as info:
            parse_config(f'[source]\npath = "a"\n[recognizer]\n{key} = {value}\n')
        return info.value.problems[0].reason

    for option, key, cli_value, toml_value in (("--region", "region", "XX", '"XX"'),
                                               ("--region", "region", "us-fl", '"us-fl"'),
                                               ("--threads", "threads", "0", "0"),
                                               ("--threads", "threads", "17", "17")):
        for command in ("recognize", "eval"):
            with pytest.raises(SystemExit) as exit_info:
                main([command, "--models", str(ocr_models), option, cli_value, str(tmp_path)])
            assert exit_info.value.code == 2
            err = capsys.readouterr().err
            assert f"argument {option}: {config_reason(key, toml_value)}" in err, err
    good = tmp_path / "plate.png"
    _plate_image(good, "ABC1234")
    assert main(["recognize", "--models", str(ocr_models), "--crop", "--region", "US-FL",
                 "--threads", "2", str(good)]) == 0
