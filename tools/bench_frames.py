"""End-to-end time per camera frame (720p and 4K): decoded frame in, reads out, on one core.

    .venv/bin/python tools/bench_frames.py --pin-cpu 1

What is timed is ``Recognizer.recognize`` (detector resize and normalisation, the model, peak
decoding, every plate's crop, OCR, beam search, format tables and the deblurred second read of
unsure plates): what the agent's recognize stage and ``plategate eval`` run. Frames are the
TRAINING sets' val scenes (open-images-plates, never an evaluation set) resized to the frame
size, so each frame holds real plates to read. The JPEG crops the agent encodes for an accepted
read are timed apart (``jpeg_ms_per_hit``).

Why two clocks: the development machine is shared (load 4-8 on two cores), so wall time
mostly measures the neighbours. ``cpu_ms`` is the process's CPU time over the call
(onnxruntime runs one intra-op thread on the calling thread; OpenCV uses one thread on a pinned
core), which is what the frame costs a core of its own; the wall-clock median is printed next to it, with the load average, and neither is hidden.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir, models_dir_arg  # noqa: E402
from agent.vision.recognizer import Recognizer  # noqa: E402
from tools.val_data import DATASETS, scene_rows  # noqa: E402

SIZES = {"720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840)}


def scenes(count: int, datasets: Path = DATASETS) -> list:
    """The first ``count`` val scenes of open-images-plates (TRAINING data), as BGR images."""
    rows = scene_rows("open-images-plates", "val", datasets)[:count]
    images = [cv2.imread(str(Path(datasets) / "open-images-plates" / r["image"]), cv2.IMREAD_COLOR)
              for r in rows]
    return [im for im in images if im is not None]


def time_size(recognizer: Recognizer, images: list, size: tuple[int, int], repeats: int) -> dict:
    """Median wall and CPU milliseconds of ``recognize`` over the images at ``size`` (h, w)."""
    from agent.vision.evidence import evidence_jpeg

    h, w = size
    frames = [cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in images]
    recognizer.recognize(frames[0])  # warm caches (format tables, onnxruntime buffers)
    wall, cpu, jpeg, hits = [], [], [], 0
    for _ in range(repeats):
        for frame in frames:
            t0, c0 = time.perf_counter(), time.process_time()
            found = recognizer.recognize(frame)
            cpu.append((time.process_time() - c0) * 1000)
            wall.append((time.perf_counter() - t0) * 1000)
            hits += len(found)
            for hit in found:
                c0 = time.process_time()
                evidence_jpeg(frame, hit.box, 1.0), evidence_jpeg(frame, hit.box, 3.0)
                jpeg.append((time.process_time() - c0) * 1000)
    return {"frames": len(cpu), "reads_per_frame": round(hits / max(len(cpu), 1), 2),
            "cpu_ms_median": round(statistics.median(cpu), 2),
            "wall_ms_median": round(statistics.median(wall), 2),
            "jpeg_ms_per_hit": round(statistics.median(jpeg), 2) if jpeg else None,
            "passes": [f"{p.scale:.3f}{' tiled' if p.tiled else ''}"
                       f"{' in proposed windows' if p.windows else ''}"
                       for p in recognizer.detector.plan(h, w)]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=models_dir_arg, default=bundled_models_dir())
    p.add_argument("--datasets", type=Path, default=DATASETS)
    p.add_argument("--sizes", nargs="+", default=["720p", "4k"], choices=sorted(SIZES))
    p.add_argument("--scenes", type=int, default=20, help="val scenes per size (default 20)")
    p.add_argument("--repeats", type=int, default=3, help="passes over the scenes (default 3)")
    p.add_argument("--min-plate-px", type=int, default=None,
                   help="recognizer.min_plate_px (default: the schema's)")
    p.add_argument("--no-proposals", action="store_true",
                   help="run the detail pass over the whole frame, not only in the windows a "
                        "pass at half the scale proposes (the detector's default)")
    p.add_argument("--pin-cpu", type=int, default=None, help="pin this process to one CPU core")
    args = p.parse_args(argv)
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
    options = {} if args.min_plate_px is None else {"min_plate_px": args.min_plate_px}
    if args.no_proposals:
        options["proposals"] = False
    recognizer = Recognizer.from_models(args.models, threads=1, **options)
    images = scenes(args.scenes, args.datasets)
    out = {"load_average_before": [round(v, 2) for v in os.getloadavg()],
           "threads": 1, "pinned_cpu": args.pin_cpu, **options}
    for name in args.sizes:
        out[name] = time_size(recognizer, images, SIZES[name], args.repeats)
    out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
