"""The read cut's operating point on TRAINING val data: correct rate against wrong rate.

    PLATEGATE_DATASETS=/work/shared/datasets .venv/bin/python tools/operating_point.py \
        [--png runs/operating_point.png] [--json runs/operating_point.json]

Why: a unit emits only reads that pass ``is_confident`` (recognizer.min_confidence, and the
stricter no-format cut); what matters in the field is how many plates get a right read that
passes (``correct_rate``, over all plates) and how many passing reads are wrong
(``wrong_rate``, over all passing reads; a wrong hotlist hit can send an officer to the wrong
car). This sweeps ``min_confidence`` (the no-format cut stays at least its default) over three
selection sets, none of them an evaluation set:

- plate-text val crops, each with its region as the hint;
- the same plates framed by the detector in their val scenes (tools/framed_val.py), the
  closest proxy to a roadside unit;
- 300 plate-free frames of the training sets' val scenes (tools/bench_detect.py), where any
  passing read is a false read (``false_reads``), read with no hint and with ``US``.

The cut is re-chosen from this table only; ``plategate eval`` then measures it.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir, models_dir_arg  # noqa: E402
from agent.config.schema import RecognizerConfig  # noqa: E402
from agent.vision.recognizer import PlateHit, Recognizer, is_confident  # noqa: E402
from tools.framed_val import framed_crops, trace  # noqa: E402
from tools.val_data import DATASETS, plate_text_val  # noqa: E402

CUTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)


def rates(pairs: list[tuple[str, PlateHit | None]], cut) -> dict:
    """correct_rate (over all plates) and wrong_rate (over accepted reads) at ``cut``."""
    right = wrong = 0
    for truth, hit in pairs:
        if hit is not None and is_confident(hit, cut):
            right += hit.text == truth
            wrong += hit.text != truth
    return {"correct_rate": round(right / len(pairs), 4) if pairs else None,
            "wrong_rate": round(wrong / (right + wrong), 4) if right + wrong else None,
            "wrong": wrong}


def collect(recognizer: Recognizer, datasets: Path, plate_free: int) -> dict:
    """Every read the sweep needs, read once."""
    from tools.bench_detect import plate_free_frames
    crops = plate_text_val(datasets)
    text_pairs = [(c.text, recognizer.read_crop(c.image, c.hint)) for c in crops]
    framed_pairs = []
    for t, det, crop in framed_crops(recognizer, trace(crops, datasets)):
        if det is None:
            framed_pairs.append((t.crop.text, None))  # a plate the unit misses
            continue
        hit = recognizer.read_crop(crop, t.crop.hint)
        hit.detection_score = float(det.score)
        framed_pairs.append((t.crop.text, hit))
    frames = plate_free_frames(datasets, plate_free, seed=0)
    free = {hint or "none": [h for _, image in frames for h in recognizer.recognize(image, hint)]
            for hint in (None, "US")}
    return {"plate_text": text_pairs, "framed": framed_pairs, "plate_free": free,
            "frames": len(frames)}


def sweep(reads: dict, base: RecognizerConfig, no_format: bool = False) -> list[dict]:
    """One row per cut: ``min_confidence`` swept (the no-format cut at least its default), or
    with ``no_format`` the no-format cut swept from ``min_confidence`` up."""
    rows = []
    for t in CUTS:
        if no_format:
            if t < base.min_confidence:
                continue
            cut = replace(base, min_confidence_no_format=t)
        else:
            cut = replace(base, min_confidence=t,
                          min_confidence_no_format=max(t, base.min_confidence_no_format))
        rows.append({"min_confidence": cut.min_confidence,
                     "min_confidence_no_format": cut.min_confidence_no_format,
                     "plate_text_val": rates(reads["plate_text"], cut),
                     "framed_val": rates(reads["framed"], cut),
                     "false_reads": {k: sum(is_confident(h, cut) for h in hits)
                                     for k, hits in reads["plate_free"].items()}})
    return rows


def draw(rows: list[dict], path: Path, default: float) -> None:
    """Correct rate (y) against wrong rate (x) per selection set, the default cut ringed."""
    H, W, pad = 400, 560, 50
    img = np.full((H, W, 3), 255, np.uint8)
    x_max = max([r[k]["wrong_rate"] or 0 for r in rows for k in ("plate_text_val", "framed_val")]
                + [0.01])

    def pt(wr, cr):
        return int(pad + (W - 2 * pad) * wr / x_max), int(H - pad - (H - 2 * pad) * cr)

    for key, col in (("plate_text_val", (200, 60, 0)), ("framed_val", (0, 0, 200))):
        pts = [pt(r[key]["wrong_rate"] or 0, r[key]["correct_rate"] or 0) for r in rows]
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, col, 1, cv2.LINE_AA)
        for r, p in zip(rows, pts):
            cv2.circle(img, p, 5 if r["min_confidence"] == default else 2, col, 1, cv2.LINE_AA)
        cv2.putText(img, key, (pad + (0 if key == "plate_text_val" else 200), 25),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, col, 1, cv2.LINE_AA)
    cv2.rectangle(img, (pad, pad), (W - pad, H - pad), (150, 150, 150), 1)
    cv2.putText(img, f"wrong rate 0..{x_max:.3f}", (pad, H - 15), cv2.FONT_HERSHEY_SIMPLEX,
                0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "correct rate 0..1", (5, pad - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=models_dir_arg, default=bundled_models_dir())
    p.add_argument("--datasets", type=Path, default=DATASETS)
    p.add_argument("--plate-free", type=int, default=300, help="plate-free frames to read")
    p.add_argument("--png", type=Path, help="draw the curve here")
    p.add_argument("--json", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    base = RecognizerConfig()
    reads = collect(Recognizer.from_models(args.models), args.datasets, args.plate_free)
    rows = sweep(reads, base)
    report = {"plate_text_val": len(reads["plate_text"]), "framed_val": len(reads["framed"]),
              "plate_free_frames": reads["frames"], "default_cut": base.min_confidence,
              "rows": rows, "no_format_rows": sweep(reads, base, no_format=True)}
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    if args.png:
        draw(rows, args.png, base.min_confidence)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
