"""Detector-framed validation data from the TRAINING sets, and how the OCR copes with framing.

    PLATEGATE_DATASETS=/work/shared/datasets .venv/bin/python tools/framed_val.py \
        [--save runs/framed_val] [--json runs/framed_val.json]
    # training data for the next model: the detector's crops of the TRAIN scenes
    PLATEGATE_DATASETS=... .venv/bin/python tools/framed_val.py --split train --save runs/framed_train

Why: the held-out US scenes showed the reader is weaker on the detector's own boxes than on
hand-cut crops (issue 20). The closest proxy we may select on is the plate-text *val* crops
traced back to the val scenes they were cut from: the detector runs on the scene, its box is
cut the way the agent cuts it (``detection_crop``), and the plate-text label says what the plate
reads. Evaluation sets are never read here.

Reports (JSON): how many val crops were traced to a scene plate, detection recall on them,
top-1 / top-5 and the operating point (``is_confident`` at the default cut) on the detector's
crops and on the labelled box cut as the plate-text crops were (10% / 15% margin), the detector box's size against the labelled
box (median and 90th percentile of width and height ratios: the framing error a trainer's
jitter should copy), and framing stability: the share of plates whose reading changes across
three tight framings of the labelled box (no margin, 5%, 10%). ``--save`` writes the detector
crops as a crops set (``groundtruth.csv``, region column) that ``plategate eval`` reads.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir, models_dir_arg  # noqa: E402
from agent.config.schema import RecognizerConfig  # noqa: E402
from agent.vision.crops import DETECTOR_MARGIN, crop_for_ocr  # noqa: E402
from agent.vision.detector import Detection  # noqa: E402
from agent.vision.evaluate import iou  # noqa: E402
from agent.vision.recognizer import PlateHit, Recognizer, detection_crop, is_confident  # noqa: E402
from tools.val_data import DATASETS, ValCrop, plate_text_val, scene_rows  # noqa: E402

MATCH_IOU = 0.3  # as plategate eval matches a detection to a labelled plate
MAX_ASPECT_GAP = 0.25  # |log(aspect)| between the crop's plate box and a scene box
STABILITY_MARGINS = (0.0, 0.05, 0.10)  # share of the box added on every side


@dataclass
class Traced:
    """A plate-text val crop traced to the plate box of the scene it was cut from."""

    crop: ValCrop
    scene: Path
    box: tuple[int, int, int, int]


def trace(crops: list[ValCrop], datasets: Path = DATASETS, split: str = "val") -> list[Traced]:
    """Each crop's scene plate: same source set and ``source_id``, the box whose aspect ratio
    is nearest the crop's own plate box (augmented copies are skipped; a source photo
    uploaded twice keeps one copy)."""
    scenes: dict[str, dict[str, list[dict]]] = {}
    out = []
    for c in crops:
        rows = scenes.setdefault(c.source_dataset, {})
        if not rows:
            for r in scene_rows(c.source_dataset, split, datasets):
                if "_aug" not in Path(r["image"]).stem:
                    rows.setdefault(r["source_id"], []).append(r)
        want = math.log(max(c.plate_box[2], 1) / max(c.plate_box[3], 1))
        best, gap = None, MAX_ASPECT_GAP
        for r in rows.get(c.source_id, []):
            for k, p in enumerate(r["plates"]):
                bw, bh = p["box"][2], p["box"][3]
                g = abs(math.log(max(bw, 1) / max(bh, 1)) - want) + (0.01 if k != c.index else 0)
                if g < gap:
                    best, gap = (r, p), g
        if best is not None:
            r, p = best
            out.append(Traced(c, datasets / c.source_dataset / r["image"],
                              tuple(int(v) for v in p["box"])))
    return out


def tight_cut(frame: np.ndarray, box, margin: float) -> np.ndarray:
    """The labelled box grown by ``margin`` of its size on every side, clipped to the frame."""
    x, y, w, h = box
    H, W = frame.shape[:2]
    x0, y0 = max(0, int(round(x - margin * w))), max(0, int(round(y - margin * h)))
    x1, y1 = min(W, int(round(x + w + margin * w))), min(H, int(round(y + h + margin * h)))
    return frame[y0:y1, x0:x1]


def matching_detection(recognizer: Recognizer, frame: np.ndarray, box) -> Detection | None:
    """The detector's box on ``frame`` that overlaps the labelled ``box`` most (IoU at least
    MATCH_IOU, as ``plategate eval`` matches), or None: a plate the unit misses."""
    dets = [d for d in recognizer.detector.detect(frame) if iou(d.box, box) >= MATCH_IOU]
    return max(dets, key=lambda d: iou(d.box, box)) if dets else None


def framed_crops(recognizer: Recognizer, traced: list[Traced]
                 ) -> Iterator[tuple[Traced, Detection | None, np.ndarray | None]]:
    """Each traced plate with the detector's box on it in its scene and the crop the agent
    cuts from that box (``detection_crop``); (plate, None, None) where the unit misses it."""
    for t in traced:
        frame = cv2.imread(str(t.scene), cv2.IMREAD_COLOR)
        det = matching_detection(recognizer, frame, t.box)
        yield t, det, None if det is None else detection_crop(frame, det)


def _hit(recognizer: Recognizer, crop: np.ndarray, hint, box, score) -> PlateHit:
    hit = recognizer.read_crop(crop, hint)
    hit.box, hit.detection_score = tuple(int(v) for v in box), score
    return hit


def _pct(values, q):
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def frame_size_arg(text: str) -> tuple[int, int]:
    """``--frame-size WxH`` (argparse type): 3840x2160 -> (3840, 2160)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: expected WIDTHxHEIGHT, e.g. 3840x2160") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"{text}: width and height must be positive")
    return width, height


def scene_frame(t: Traced, frame_size: tuple[int, int] | None = None
                ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The traced plate's scene and its labelled box, both resized to ``frame_size`` (width,
    height) when given: the same plates as a camera of that resolution would see them."""
    frame = cv2.imread(str(t.scene), cv2.IMREAD_COLOR)
    if frame_size is None:
        return frame, t.box
    h, w = frame.shape[:2]
    sx, sy = frame_size[0] / w, frame_size[1] / h
    x, y, bw, bh = t.box
    return (cv2.resize(frame, frame_size, interpolation=cv2.INTER_LINEAR),
            (round(x * sx), round(y * sy), round(bw * sx), round(bh * sy)))


def measure(recognizer: Recognizer, traced: list[Traced], cut=None,
            save: Path | None = None, margin: tuple[float, float] = DETECTOR_MARGIN,
            frame_size: tuple[int, int] | None = None) -> dict:
    """The figures of the module docstring over ``traced`` plates, with each scene resized
    to ``frame_size`` (width, height) when given."""
    cut = cut or RecognizerConfig()
    counts = {k: 0 for k in ("detected", "det_top1", "det_top5", "det_acc_right", "det_acc_wrong",
                             "box_top1", "box_acc_right", "box_acc_wrong", "unstable")}
    wr, hr, rows = [], [], []
    for n, t in enumerate(traced):
        frame, box = scene_frame(t, frame_size)
        truth, hint = t.crop.text, t.crop.hint
        box_hit = _hit(recognizer, crop_for_ocr(frame, box), hint, box, None)
        counts["box_top1"] += box_hit.text == truth
        if is_confident(box_hit, cut):
            counts["box_acc_right" if box_hit.text == truth else "box_acc_wrong"] += 1
        readings = {recognizer.read_crop(tight_cut(frame, box, m), hint).text
                    for m in STABILITY_MARGINS}
        counts["unstable"] += len(readings) > 1
        det = matching_detection(recognizer, frame, box)
        if det is None:
            continue
        counts["detected"] += 1
        wr.append(det.box[2] / box[2])
        hr.append(det.box[3] / box[3])
        crop = detection_crop(frame, det, margin)
        hit = _hit(recognizer, crop, hint, det.box, float(det.score))
        counts["det_top1"] += hit.text == truth
        counts["det_top5"] += truth in [c for c, _ in hit.candidates] or hit.text == truth
        if is_confident(hit, cut):
            counts["det_acc_right" if hit.text == truth else "det_acc_wrong"] += 1
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            name = f"{n:04d}.png"
            cv2.imwrite(str(save / name), crop)
            rows.append(f"{name},{(hint or '').lower().replace('us-', '')},{truth}")
    if save is not None:
        (save / "groundtruth.csv").write_text("\n".join(rows) + "\n")
    total = len(traced)
    rate = (lambda k, d=total: round(counts[k] / d, 4) if d else None)
    det_acc = counts["det_acc_right"] + counts["det_acc_wrong"]
    box_acc = counts["box_acc_right"] + counts["box_acc_wrong"]
    return {
        "plates": total,
        "detection_recall": rate("detected"),
        "detector_box": {"top1": rate("det_top1"), "top5": rate("det_top5"),
                         "accepted": {"correct_rate": rate("det_acc_right"),
                                      "wrong_rate": round(counts["det_acc_wrong"] / det_acc, 4)
                                      if det_acc else None,
                                      "right": counts["det_acc_right"],
                                      "wrong": counts["det_acc_wrong"]}},
        "labelled_box": {"top1": rate("box_top1"),
                         "accepted": {"correct_rate": rate("box_acc_right"),
                                      "wrong_rate": round(counts["box_acc_wrong"] / box_acc, 4)
                                      if box_acc else None}},
        "box_ratio": {"width": {"median": _pct(wr, 50), "p90": _pct(wr, 90)},
                      "height": {"median": _pct(hr, 50), "p90": _pct(hr, 90)}},
        "framing_unstable": rate("unstable"),
        "stability_margins": list(STABILITY_MARGINS),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=models_dir_arg, default=bundled_models_dir())
    p.add_argument("--datasets", type=Path, default=DATASETS)
    p.add_argument("--save", type=Path, help="write the detector crops here as a crops set")
    p.add_argument("--json", type=Path, help="also write the report to this file")
    p.add_argument("--margin", type=float, nargs=2, default=list(DETECTOR_MARGIN),
                   metavar=("X", "Y"), help="margin of the detector crops, shares of the box "
                   "width and height on each side (default: the agent's DETECTOR_MARGIN)")
    p.add_argument("--limit", type=int, default=0, help="only the first N traced plates")
    p.add_argument("--split", choices=("val", "train"), default="val",
                   help="val: the selection proxy (default); train: training crops for --save")
    p.add_argument("--frame-size", default=None, type=frame_size_arg, metavar="WxH",
                   help="resize each scene to this camera frame first (e.g. 3840x2160): the "
                        "same plates as a camera of that resolution would see them")
    args = p.parse_args(argv)
    frame_size = args.frame_size
    recognizer = Recognizer.from_models(args.models)
    crops = plate_text_val(args.datasets, split=args.split)
    traced = trace(crops, args.datasets, args.split)[:args.limit or None]
    margin = tuple(args.margin)
    report = {"split": args.split, "crops": len(crops), "margin": margin, "by_region": {}}
    report.update(measure(recognizer, traced, save=args.save, margin=margin,
                          frame_size=frame_size))
    us = [t for t in traced if (t.crop.hint or "").startswith("US")]
    report["by_region"]["US"] = measure(recognizer, us, margin=margin, frame_size=frame_size)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
