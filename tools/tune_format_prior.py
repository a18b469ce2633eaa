"""Pick FORMAT_PRIOR (agent/vision/ocr.py) on the plate-text *val* split (a selection set).

    .venv/bin/python tools/tune_format_prior.py --models models

Prints top-1 on plate-text val (one-row plates, with each crop's region as the hint) for a few
prior values; ``--framed`` reads the same plates as the detector frames them in their val
scenes instead (tools/framed_val.py), the closer proxy to a roadside unit. Never run on the eval-* sets: the prior is a tuned threshold.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir, models_dir_arg  # noqa: E402
from agent.vision import ocr  # noqa: E402
from agent.vision.ocr import PlateReader  # noqa: E402
from tools.val_data import DATASETS, plate_text_val  # noqa: E402


def framed_crops(models: Path, datasets: Path):
    """(crop, text, hint) of every val plate the detector finds in its scene."""
    import cv2

    from agent.vision.evaluate import iou
    from agent.vision.recognizer import Recognizer, detection_crop
    from tools.framed_val import MATCH_IOU, trace
    recognizer = Recognizer.from_models(models)
    for t in trace(plate_text_val(datasets), datasets):
        frame = cv2.imread(str(t.scene), cv2.IMREAD_COLOR)
        dets = [d for d in recognizer.detector.detect(frame) if iou(d.box, t.box) >= MATCH_IOU]
        if dets:
            det = max(dets, key=lambda d: iou(d.box, t.box))
            yield detection_crop(frame, det), t.crop.text, t.crop.hint


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Tune FORMAT_PRIOR on plate-text val.")
    p.add_argument("--models", type=models_dir_arg, default=bundled_models_dir(), help="models folder")
    p.add_argument("--datasets", type=Path, default=DATASETS, help="shared datasets folder")
    p.add_argument("--framed", action="store_true",
                   help="the detector's crops of the val scenes instead of the stored crops")
    args = p.parse_args(argv)
    reader = PlateReader.from_models(args.models)
    if args.framed:
        rows = [(reader.probabilities(crop), text, hint)
                for crop, text, hint in framed_crops(args.models, args.datasets)]
    else:
        rows = [(reader.probabilities(c.image), c.text, c.hint)
                for c in plate_text_val(args.datasets)]
    us = [r for r in rows if (r[2] or "").startswith("US")]
    out = {}
    for prior in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0):
        ocr.FORMAT_PRIOR = prior
        hits = sum(ocr.resolve(pr, hint).text == t for pr, t, hint in rows)
        hits_nohint = sum(ocr.resolve(pr, None).text == t for pr, t, _ in rows)
        hits_us = sum(ocr.resolve(pr, hint).text == t for pr, t, hint in us)
        out[prior] = {"with_region": round(hits / len(rows), 4), "right": hits,
                      "no_region": round(hits_nohint / len(rows), 4),
                      "us_right": hits_us}
    print(json.dumps({"crops": len(rows), "us_crops": len(us), "top1_by_prior": out},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
