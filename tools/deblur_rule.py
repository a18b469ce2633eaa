"""Choose when the reader undoes motion blur (agent.vision.deblur.DeblurRule), on TRAINING data.

    PLATEGATE_DATASETS=/work/shared/datasets .venv/bin/python tools/deblur_rule.py \
        [--json runs/deblur_rule.json]

Why: a roadside plate smeared by 5 px reads wrong, often with confidence, while the blur is
nearly invertible (agent/vision/deblur.py). Whether to read a crop a second time with the blur
undone, and which reading to keep, is a trade: on blurred plates the second reading wins many
plates back, on sharp ones it can swap a right reading for a wrong one. Every crop is read
once as it is and once deblurred at the estimated length, then each rule of a grid is scored
from those readings:

- plate-text val crops shrunk to a 90 px plate and blurred by 0, 3, 5, 7 and 9 px
  (tools/blur_curve.py), each with its region hint, and by 5 and 9 px tilted 10 and 20 degrees;
- the same plates framed by the detector in their val scenes (tools/framed_val.py), unblurred:
  what a unit sees;
- the detector's crops of sharp synthetic road frames (tools/synth/make_passes.py, seeded, no
  exposure blur): clean rendered plates, where a sharp plate's own pattern must not be taken
  for a blur.

The rule is chosen in two steps. First the horizontal part (tilted blur off): a rule passes
where, against reading unsure crops only (``seen_length`` past the search range), the
unblurred, detector-framed and synthetic crops get no fewer right reads and no more wrong reads
through the default cut. Of those, the one with the most right reads on the blurred crops is
chosen (a tie: fewer wrong reads through the cut there, then fewer second readings of the
unblurred crops, which cost time). Then the tilted part, on top of it: a setting passes where
those three sets still lose nothing and the blurred crops, all of them, let no more wrong reads
through the cut than without it; the most right reads on the blurred crops wins, with the same
ties. The 300 plate-free frames are checked after, with
tools/operating_point.py. No evaluation set is read here.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config.schema import RecognizerConfig  # noqa: E402
from agent.resources import bundled_models_dir, models_dir_arg  # noqa: E402
from agent.vision import deblur  # noqa: E402
from agent.vision.crops import to_model_input  # noqa: E402
from agent.vision.ocr import PlateReader, PlateText  # noqa: E402
from agent.vision.recognizer import (PlateHit, ReadCut, Recognizer, detection_crop,  # noqa: E402
                                     is_confident)
from tools.blur_curve import blur, shrink  # noqa: E402
from tools.framed_val import framed_crops, trace  # noqa: E402
from tools.synth.make_passes import make_passes  # noqa: E402
from tools.val_data import DATASETS, plate_text_val  # noqa: E402

BLUR_LENGTHS = (0, 3, 5, 7, 9)
PLATE_WIDTH = 90
TILTS = (10, 20)  # degrees of the tilted blurred sets (5 and 9 px each)
GRID = {"seen_length": (3, 5, 6, 7, 8, 9), "seen_max_length": (13, 15, 17, 19, deblur.MAX_LENGTH),
        "seen_depth": (0.2, 0.4, 0.6, 0.8, 1.0, 1.2), "seen_gain": (0.0, 0.5, 0.8, 1.0, 1.5)}
TILTED_GRID = {"tilted_min_angle": (2.0, 4.0, 8.0), "tilted_min_length": (3, 5, 7, 9),
               "tilted_gain": (1.0, 2.0), "tilted_min_confidence": (0.0, 0.7, 0.9, 0.95, 0.98)}
NO_TILT = {"tilted_min_angle": float("inf")}  # a tilted blur is never undone
PASSES = {"seed": 31, "count": 24, "width": 640, "height": 360}  # the synthetic road clip
GUARDED = ("blur_0", "framed", "passes")  # sets that must not lose: no blur was added to them
UNSURE_ONLY = deblur.DeblurRule(seen_length=deblur.MAX_LENGTH + 1, **NO_TILT)  # no blur "seen"


@dataclass
class Reading:
    """One crop read as it is (``first``), with its estimated horizontal blur undone
    (``again``) and with its estimated tilted blur undone (``tilted``)."""

    truth: str
    first: PlateText
    again: PlateText
    blur: deblur.MotionBlur
    tilted: PlateText
    tilt: deblur.TiltedBlur
    detection_score: float | None = None


def readings(reader: PlateReader, crop: np.ndarray, truth: str, hint: str | None,
             detection_score: float | None = None) -> Reading:
    x = to_model_input(crop)
    found, tilt = deblur.estimate(x), deblur.estimate_tilted(x)
    return Reading(truth, reader.read_input(x, hint),
                   reader.read_input(deblur.wiener(x, found.length), hint), found,
                   reader.read_input(deblur.wiener_tilted(x, tilt), hint), tilt, detection_score)


def collect(recognizer: Recognizer, datasets: Path) -> dict[str, list[Reading]]:
    """Both readings of every selection crop, by set (``blur_0`` .. ``blur_9``, ``framed``,
    ``passes``)."""
    reader = recognizer.reader
    crops = plate_text_val(datasets)
    sets = {f"blur_{n}": [readings(reader, blur(shrink(c.image, PLATE_WIDTH), n), c.text, c.hint)
                          for c in crops] for n in BLUR_LENGTHS}
    for angle in TILTS:
        for n in (5, 9):
            sets[f"blur_{n}_tilted_{angle}"] = [
                readings(reader, blur(shrink(c.image, PLATE_WIDTH), n, angle), c.text, c.hint)
                for c in crops]
    sets["framed"] = [readings(reader, crop, t.crop.text, t.crop.hint, float(det.score))
                      for t, det, crop in framed_crops(recognizer, trace(crops, datasets))
                      if det is not None]
    sets["passes"] = synthetic_pass_readings(recognizer)
    return sets


def synthetic_pass_readings(recognizer: Recognizer) -> list[Reading]:
    """Both readings of the best detection in every frame of a sharp synthetic road clip
    where exactly one plate is wholly in view (its text is the truth; no region hint)."""
    with tempfile.TemporaryDirectory() as work:
        clip = Path(work) / "passes.mp4"
        truth = make_passes(clip, stop_share=0.0, exposure_s=0, **PASSES)
        in_view: dict[int, list[str]] = {}
        for p in truth["passes"]:
            if p["first_full_frame"] is not None:
                for f in range(p["first_full_frame"], p["last_full_frame"] + 1):
                    in_view.setdefault(f, []).append(p["text"])
        out = []
        capture = cv2.VideoCapture(str(clip))
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            texts = in_view.get(index, [])
            index += 1
            dets = recognizer.detector.detect(frame) if len(texts) == 1 else []
            if dets:
                det = max(dets, key=lambda d: d.score)
                out.append(readings(recognizer.reader, detection_crop(frame, det), texts[0], None,
                                    float(det.score)))
        capture.release()
    return out


def score(rule: deblur.DeblurRule, items: list[Reading], cut: ReadCut) -> dict:
    """Right reads, wrong reads through ``cut`` and second readings made, under ``rule``."""
    right = wrong = second = 0
    for r in items:  # decided where PlateReader.read decides, from the readings made above
        kept, runs = rule.decide(r.first, r.blur, lambda: r.again, lambda: r.tilt,
                                 lambda _tilt: r.tilted)
        second += runs
        hit = PlateHit(kept.text, kept.confidence, (0, 0, 0, 0), format=kept.format,
                       detection_score=r.detection_score)
        right += kept.text == r.truth
        wrong += kept.text != r.truth and is_confident(hit, cut)
    return {"right": right, "wrong": wrong, "second_readings": second}


def choose(sets: dict[str, list[Reading]], cut: ReadCut) -> dict:
    """Score the grids and pick a rule by the module docstring's criteria."""
    blurred = [n for n in sets if n.startswith("blur_") and n != "blur_0"]

    def scored(rule: deblur.DeblurRule) -> dict:
        sc = {name: score(rule, items, cut) for name, items in sets.items()}
        return {"rule": asdict(rule), "sets": sc,
                "blurred_right": sum(sc[n]["right"] for n in blurred),
                "blurred_wrong": sum(sc[n]["wrong"] for n in blurred),
                "guarded_second_readings": sum(sc[n]["second_readings"] for n in GUARDED)}

    def best(rows: list[dict], base: dict, max_blurred_wrong: int | None = None) -> list[dict]:
        passing = [r for r in rows
                   if all(r["sets"][n]["right"] >= base["sets"][n]["right"]
                          and r["sets"][n]["wrong"] <= base["sets"][n]["wrong"] for n in GUARDED)
                   and (max_blurred_wrong is None or r["blurred_wrong"] <= max_blurred_wrong)]
        return sorted(passing, key=lambda r: (r["blurred_right"], -r["blurred_wrong"],
                                              -r["guarded_second_readings"]), reverse=True)

    base = scored(UNSURE_ONLY)
    rows = [scored(replace(UNSURE_ONLY, **dict(zip(GRID, values))))
            for values in itertools.product(*GRID.values())]
    passing = best(rows, base)
    if not passing:
        return {"unsure_only": base, "shipped": scored(deblur.DeblurRule()), "chosen": None,
                "passing": 0, "grid": len(rows), "rows": rows}
    horizontal = passing[0]
    start = deblur.DeblurRule(**horizontal["rule"])
    tilted_rows = [scored(replace(start, **dict(zip(TILTED_GRID, values))))
                   for values in itertools.product(*TILTED_GRID.values())]
    tilted = best(tilted_rows, horizontal, horizontal["blurred_wrong"])
    return {"unsure_only": base, "shipped": scored(deblur.DeblurRule()),
            "horizontal": horizontal, "chosen": tilted[0] if tilted else horizontal,
            "passing": len(passing), "grid": len(rows), "tilted_passing": len(tilted),
            "tilted_grid": len(tilted_rows), "best_ten": passing[:10],
            "tilted_best_ten": tilted[:10], "rows": rows, "tilted_rows": tilted_rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=models_dir_arg, default=bundled_models_dir())
    p.add_argument("--datasets", type=Path, default=DATASETS)
    p.add_argument("--json", type=Path, help="also write the report to this file")
    args = p.parse_args(argv)
    sets = collect(Recognizer.from_models(args.models), args.datasets)
    report = {"crops": {name: len(items) for name, items in sets.items()},
              "plate_width_px": PLATE_WIDTH, **choose(sets, RecognizerConfig())}
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    summary = {k: report.get(k) for k in ("crops", "passing", "grid", "tilted_passing",
                                          "tilted_grid")}
    for k in ("unsure_only", "shipped", "horizontal", "chosen"):  # right / wrong through the cut, per set
        summary[k] = report.get(k) and {"rule": report[k]["rule"], **{
            n: f"{s['right']} / {s['wrong']}" for n, s in report[k]["sets"].items()}}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
