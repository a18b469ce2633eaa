"""Benchmark the plate OCR: our model (fp32 and int8) next to Tesseract 5 on the same crops.

    .venv/bin/python tools/bench_ocr.py --datasets ../shared/datasets --sets eval-us-crops eval-br-crops

Prints one JSON object: per set and reader, exact-match top-1 (and top-5 for ours) and ms per
crop (batch 1, one thread): ``model_ms`` is the onnxruntime call alone, ``total_ms`` adds the
crop preparation and decoding (what ``plategate eval`` times). Tesseract runs as the Debian
``tesseract`` CLI with ``--psm 7`` and an A-Z0-9 whitelist, one process per crop (its time
includes process start, which is how a caller without bindings would use it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir, models_dir_arg  # noqa: E402
from agent.vision.crops import to_model_input  # noqa: E402
from agent.vision.evaluate import load_crops, read_image  # noqa: E402
from agent.vision.ocr import PlateReader  # noqa: E402
from agent.vision.plate_formats import CHARSET, normalise_text  # noqa: E402

DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def load_set(folder: Path, limit: int | None) -> list[tuple[Path, str, str | None]]:
    """(crop, text, region hint) per row, the hints as ``plategate eval`` gives them."""
    return [(r.image, r.plates[0][0], r.region) for r in load_crops(folder)[:limit or None]]


def bench_ours(reader: PlateReader, items) -> dict:
    top1 = top5 = 0
    model_ms, total_ms = [], []
    sess, name = reader._session, reader._input
    for path, _truth, _region in items[:20]:  # warm-up
        sess.run(None, {name: to_model_input(read_image(path))})
    for path, truth, region in items:
        image = read_image(path)
        x = to_model_input(image)
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        model_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        read = reader.read(image, region)
        total_ms.append((time.perf_counter() - t0) * 1000)
        top1 += read.text == truth
        top5 += truth in [t for t, _ in read.candidates] or read.text == truth
    n = max(len(items), 1)
    return {"crops": len(items), "top1_accuracy": round(top1 / n, 4),
            "top5_accuracy": round(top5 / n, 4),
            "model_ms": {"median": round(float(np.median(model_ms)), 3),
                         "p90": round(float(np.percentile(model_ms, 90)), 3)},
            "total_ms": {"median": round(float(np.median(total_ms)), 3),
                         "p90": round(float(np.percentile(total_ms, 90)), 3)}}


def bench_tesseract(items) -> dict:
    exe = shutil.which("tesseract")
    if not exe:
        return {"error": "tesseract not installed (Debian package tesseract-ocr)"}
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.split(
        "\n")[0]
    top1, times = 0, []
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    for path, truth, _region in items:
        t0 = time.perf_counter()
        out = subprocess.run([exe, str(path), "stdout", "--psm", "7", "-l", "eng",
                              "-c", f"tessedit_char_whitelist={CHARSET}"],
                             capture_output=True, text=True, env=env)
        times.append((time.perf_counter() - t0) * 1000)
        top1 += normalise_text(out.stdout.strip()) == truth
    n = max(len(items), 1)
    return {"version": version, "crops": len(items), "top1_accuracy": round(top1 / n, 4),
            "ms": {"median": round(float(np.median(times)), 3),
                   "p90": round(float(np.percentile(times, 90)), 3)}}


def _reader(path: Path) -> PlateReader:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return PlateReader(sess, {"file": path.name, "charset": CHARSET})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="OCR accuracy and speed: ours (fp32, int8) vs "
                                            "Tesseract 5.")
    p.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="datasets folder")
    p.add_argument("--sets", nargs="+", default=["eval-us-crops", "eval-br-crops"],
                   help="crops sets (groundtruth.csv layout) to run")
    p.add_argument("--models", type=models_dir_arg, default=bundled_models_dir(), help="models folder")
    p.add_argument("--limit", type=int, default=None, help="first N crops of each set only")
    p.add_argument("--no-tesseract", action="store_true", help="skip Tesseract")
    p.add_argument("--no-ours", action="store_true", help="skip our model (Tesseract only)")
    p.add_argument("--pin-cpu", type=int, default=None,
                   help="pin this process (and Tesseract) to one CPU core")
    args = p.parse_args(argv)
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
    manifest, files = {}, {}
    if not args.no_ours:
        manifest = json.loads((args.models / "manifest.json").read_text())["models"]["plate_ocr"]
        files = {manifest.get("precision", "fp32"): args.models / manifest["file"]}
        for key in ("fp32", "int8"):
            if f"file_{key}" in manifest:
                files[key] = args.models / manifest[f"file_{key}"]
    report = {"machine": {"cpu": _cpu_name(), "python": platform.python_version(),
                          "threads": 1, "pinned_cpu": args.pin_cpu},
              "model_version": manifest.get("version"), "sets": {}}
    for name in args.sets:
        items = load_set(args.datasets / name, args.limit)
        entry = {}
        for precision, path in sorted(files.items()):
            entry[f"ours_{precision}"] = bench_ours(_reader(path), items)
        if not args.no_tesseract:
            entry["tesseract"] = bench_tesseract(items)
        report["sets"][name] = entry
        print(json.dumps({name: entry}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
