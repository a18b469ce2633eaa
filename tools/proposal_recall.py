"""The detector's proposal windows against its whole-frame detail pass, on 4K frames.

    PLATEGATE_DATASETS=/work/shared/datasets .venv/bin/python tools/proposal_recall.py --pin-cpu 1

Why: at 4K the detail pass over the whole frame is most of a frame's time; with proposals
(``PlateDetector(proposals=True)``) a pass at half the scale proposes where plates may be and
the detail pass runs only there (docs/detection.md "Proposals"). That may only ship if it finds
the plates the whole pass finds. The frames are the TRAINING sets' val scenes (never an
evaluation set) resized to 3840 x 2160 as `tools/bench_frames.py` resizes them, with their
labelled boxes scaled alike; a plate counts when it is at least ``--min-plate-px`` wide there
(the agent's default 40) and a detection overlaps it with IoU >= 0.5. Both ways run on the
same frames, one after the other; CPU time of ``detect`` per frame is printed beside. Then
the detector-framed val (`tools/framed_val.py`: plate-text val plates in their val scenes,
read by the shipped OCR) with each scene resized to 4K the same way: detection recall, top-1
and the reads through the default cut, right and wrong.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir, models_dir_arg  # noqa: E402
from agent.vision.detector import DEFAULT_PROPOSAL_THRESHOLD, PlateDetector, iou_xyxy  # noqa: E402
from agent.vision.ocr import PlateReader  # noqa: E402
from agent.vision.recognizer import Recognizer  # noqa: E402
from tools.framed_val import frame_size_arg, trace  # noqa: E402
from tools.framed_val import measure as framed_measure  # noqa: E402
from tools.val_data import DATASETS, SCENE_SETS, plate_text_val, scene_rows  # noqa: E402

FRAME = (3840, 2160)
WIDTH_BINS = (80, 160)  # plate widths (frame px) the found counts are also split at


def frames(datasets: Path, limit: int, size: tuple[int, int] = FRAME):
    """(BGR frame of ``size``, labelled boxes as x0, y0, x1, y1 in its pixels) of the val
    scenes."""
    count = 0
    for name in SCENE_SETS:
        for row in scene_rows(name, "val", datasets):
            if count >= limit:
                return
            image = cv2.imread(str(Path(datasets) / name / row["image"]), cv2.IMREAD_COLOR)
            if image is None:
                continue
            h, w = image.shape[:2]
            sx, sy = size[0] / w, size[1] / h
            boxes = np.array([[x * sx, y * sy, (x + bw) * sx, (y + bh) * sy]
                              for x, y, bw, bh in (p["box"] for p in row["plates"])],
                             dtype=np.float32).reshape(-1, 4)
            count += 1
            yield cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), boxes


def measure(detectors: dict[str, PlateDetector], datasets: Path, limit: int,
            min_plate_px: int, size: tuple[int, int] = FRAME) -> dict:
    """Plates found (also by plate width: ``WIDTH_BINS`` from ``min_plate_px``), detections,
    unmatched detections and CPU ms per frame, per detector."""
    edges = [min_plate_px, *WIDTH_BINS, math.inf]
    bins = [f"{lo}-{hi}px" if hi != math.inf else f"{lo}px+" for lo, hi in zip(edges, edges[1:])]
    out = {name: {"found": 0, "found_by_width": dict.fromkeys(bins, 0), "detections": 0,
                  "unmatched": 0, "ms": []} for name in detectors}
    plates_by_width = dict.fromkeys(bins, 0)
    plates = frames_seen = 0
    for frame, boxes in frames(datasets, limit, size):
        frames_seen += 1
        counted = boxes[(boxes[:, 2] - boxes[:, 0]) >= min_plate_px]
        plates += len(counted)
        which = np.searchsorted(edges, counted[:, 2] - counted[:, 0], side="right") - 1
        for b in which:
            plates_by_width[bins[b]] += 1
        for name, detector in detectors.items():
            c0 = time.process_time()
            found = detector.detect(frame)
            out[name]["ms"].append((time.process_time() - c0) * 1000)
            det = np.array([[x, y, x + w, y + h] for x, y, w, h in (d.box for d in found)],
                           dtype=np.float32).reshape(-1, 4)
            ious = iou_xyxy(counted, det)
            hit = ious.max(axis=1) >= 0.5 if ious.size else np.zeros(len(counted), bool)
            out[name]["found"] += int(hit.sum())
            for b in which[hit]:
                out[name]["found_by_width"][bins[b]] += 1
            out[name]["detections"] += len(det)
            every = iou_xyxy(det, boxes)
            out[name]["unmatched"] += int((every.max(axis=1) < 0.3).sum()) if every.size \
                else len(det)
    for figures in out.values():
        ms = figures.pop("ms")
        figures["cpu_ms_median"] = round(statistics.median(ms), 2) if ms else None
    return {"frames": frames_seen, "plates": plates, "plates_by_width": plates_by_width, **out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=models_dir_arg, default=bundled_models_dir())
    p.add_argument("--datasets", type=Path, default=DATASETS)
    p.add_argument("--scenes", type=int, default=10_000, help="at most this many val scenes")
    p.add_argument("--min-plate-px", type=int, default=40)
    p.add_argument("--threshold", type=float, nargs="+", default=[DEFAULT_PROPOSAL_THRESHOLD],
                   help="proposal thresholds to measure (default: the detector's)")
    p.add_argument("--frame-size", default=FRAME, type=frame_size_arg, metavar="WxH",
                   help="the camera frame the scenes are resized to (default 3840x2160)")
    p.add_argument("--no-reads", action="store_true",
                   help="skip the detector-framed val read at 4K (tools/framed_val.py)")
    p.add_argument("--pin-cpu", type=int, default=None, help="pin to one core (timing)")
    args = p.parse_args(argv)
    size = args.frame_size
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
    detectors = {"whole": PlateDetector.from_models(args.models, min_plate_px=args.min_plate_px,
                                                    proposals=False)}
    for t in args.threshold:
        detectors[f"proposals {t}"] = PlateDetector.from_models(
            args.models, min_plate_px=args.min_plate_px, proposals=True, proposal_threshold=t)
    report = {"load_average": [round(v, 2) for v in os.getloadavg()], "frame_size": size,
              **measure(detectors, args.datasets, args.scenes, args.min_plate_px, size)}
    if not args.no_reads:
        reader = PlateReader.from_models(args.models)
        traced = trace(plate_text_val(args.datasets), args.datasets)
        report["framed_val"] = {}
        for name, detector in detectors.items():
            figures = framed_measure(Recognizer(reader, detector), traced, frame_size=size)
            report["framed_val"][name] = {"plates": figures["plates"],
                                             "detection_recall": figures["detection_recall"],
                                             **figures["detector_box"]}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
