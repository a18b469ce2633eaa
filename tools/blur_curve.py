"""Top-1 against motion-blur length on plate crops shrunk to a roadside plate size.

    .venv/bin/python tools/blur_curve.py ../shared/datasets/eval-us-crops      # measuring only
    PLATEGATE_DATASETS=... .venv/bin/python tools/blur_curve.py --plate-text-val  # selection

Why: a car crossing the frame during the exposure smears its plate sideways; the held-out US
scenes showed reads falling off a cliff between 5 and 9 px of blur (issue 20). Each crop is
shrunk so the plate is ``--width`` px wide (90 by default, a typical roadside plate), then
blurred with a horizontal line kernel of each length (0, 3, 5, 9 px; ``--angle`` tilts it) and
read with the crop's region hint, as ``plategate eval`` does. An ``eval-*`` set given here is
measured, never tuned on; ``--plate-text-val`` runs the same curve on the TRAINING val crops
(shrunk to the same width only where they are wider), which is what a training choice may use.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir, models_dir_arg  # noqa: E402
from agent.vision.evaluate import load_crops, read_image  # noqa: E402
from agent.vision.ocr import PlateReader  # noqa: E402
from tools.synth.camera import motion_kernel  # noqa: E402
from tools.val_data import DATASETS, plate_text_val  # noqa: E402

LENGTHS = (0, 3, 5, 9)


def shrink(image: np.ndarray, width: int) -> np.ndarray:
    """The crop scaled so that it is ``width`` px wide (never enlarged)."""
    h, w = image.shape[:2]
    if w <= width:
        return image
    return cv2.resize(image, (width, max(2, int(round(h * width / w)))),
                      interpolation=cv2.INTER_AREA)


def blur(image: np.ndarray, length: int, angle: float = 0.0) -> np.ndarray:
    """Linear motion blur of ``length`` px (0 or 1: unchanged)."""
    if length <= 1:
        return image
    return cv2.filter2D(image, -1, motion_kernel(length, angle), borderType=cv2.BORDER_REPLICATE)


def curve(reader: PlateReader, items: list[tuple[np.ndarray, str, str | None]], width: int,
          lengths=LENGTHS, angle: float = 0.0) -> list[dict]:
    """top-1 and top-5 per blur length over (image, truth, hint) items."""
    small = [(shrink(img, width), truth, hint) for img, truth, hint in items]
    rows = []
    for length in lengths:
        top1 = top5 = 0
        for img, truth, hint in small:
            read = reader.read(blur(img, length, angle), hint)
            top1 += read.text == truth
            top5 += read.text == truth or truth in [t for t, _ in read.candidates]
        n = max(len(small), 1)
        rows.append({"blur_px": length, "top1": round(top1 / n, 4), "top5": round(top5 / n, 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", nargs="?", type=Path, help="a crops set (groundtruth.csv)")
    p.add_argument("--plate-text-val", action="store_true",
                   help="use the TRAINING plate-text val crops instead of a crops set")
    p.add_argument("--datasets", type=Path, default=DATASETS)
    p.add_argument("--models", type=models_dir_arg, default=bundled_models_dir())
    p.add_argument("--width", type=int, default=90, help="plate width in px after shrinking")
    p.add_argument("--angle", type=float, default=0.0, help="blur direction, degrees")
    p.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    args = p.parse_args(argv)
    if args.plate_text_val == (args.dataset is not None):
        p.error("give a crops set or --plate-text-val (one of them)")
    reader = PlateReader.from_models(args.models)
    if args.plate_text_val:
        items = [(c.image, c.text, c.hint) for c in plate_text_val(args.datasets)]
        name = "plate-text val"
    else:
        items = [(read_image(r.image), r.plates[0][0], r.region) for r in load_crops(args.dataset)]
        name = str(args.dataset)
    rows = curve(reader, items, args.width, args.lengths, args.angle)
    print(json.dumps({"set": name, "crops": len(items), "width_px": args.width,
                      "angle": args.angle, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
