"""Export a trained OCR checkpoint to ONNX (fp32 + int8), measure it, write the manifest entry.

    .venv/bin/python tools/export_ocr.py --checkpoint runs/ocr/best.pt
    .venv/bin/python tools/export_ocr.py --fp32-onnx runs/soup.onnx   # tools/soup_ocr.py

Steps: ONNX export (opset 17, input ``image`` [1, 1, 48, 144] grey 0..255, output ``probs``
[1, 36, 37]); static int8 quantisation (onnxruntime.quantization, QDQ, per channel) calibrated
on synthetic + plate-text *train* crops; accuracy of both on the selection sets (plate-text val,
synthetic val) decides which one ships as models/plate_ocr.onnx (int8 only if it is within one
point of fp32 there); then both are measured on the evaluation sets, which decide nothing.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir  # noqa: E402
from agent.vision.crops import OCR_INPUT_HEIGHT, OCR_INPUT_WIDTH, to_model_input  # noqa: E402
from agent.vision.evaluate import evaluate  # noqa: E402
from agent.vision.models import cpu_session, file_sha256, update_manifest_entry  # noqa: E402
from agent.vision.ocr import PlateReader, resolve  # noqa: E402
from agent.vision.plate_formats import CHARSET  # noqa: E402
from agent.vision.recognizer import Recognizer  # noqa: E402
from tools.ocr_net import build, checkpoint_arch, load_weights  # noqa: E402
from tools.ocr_onnx_init import onnx_arch  # noqa: E402
from tools.quantise import quantise as quantise_static  # noqa: E402
from tools.train_ocr import DATASETS, load_real  # noqa: E402

ATTRIBUTION = (
    "Licence-plate boxes and images from the Roboflow Universe datasets Google Licence Plates "
    "(aaaaaaaaaa-67qhw, via github.com/unknowncz/LP_recognition) and License Plates US EU "
    "(university-hksok, via github.com/conztantinee/thesis), both CC BY 4.0, derived from the "
    "Open Images Dataset (Google, annotations CC BY 4.0, images CC BY 2.0). Changed: merged and "
    "de-duplicated, re-encoded, resized, boxes converted.")
TRAINED_ON = [
    "synthetic plates from tools/synth (our own generator and format tables)",
    "plate-text train split (real crops from open-images-plates CC BY 4.0, ro-dashcam MIT "
    "(c) 2020 Robert Lucian Chiriac, us-roboflow MIT, kaggle-plates CC0; transcriptions ours)",
    "ar-crops train split (MIT, Copyright (c) 2024 ankandrew)",
    ATTRIBUTION,
]


def export_fp32(checkpoint: Path, out: Path) -> tuple[dict, str]:
    """Write the fp32 ONNX of ``checkpoint``; return its selection metrics and network size."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    arch = checkpoint_arch(ck)
    model = build(arch)
    load_weights(model, arch, ck, checkpoint)
    model.eval()
    dummy = torch.zeros(1, 1, OCR_INPUT_HEIGHT, OCR_INPUT_WIDTH)
    torch.onnx.export(model, (dummy,), str(out), input_names=["image"], output_names=["probs"],
                      opset_version=17, do_constant_folding=True, dynamo=False)
    return ck.get("metrics", {}), arch


def quantise(fp32: Path, out: Path, calib: list[np.ndarray]) -> None:
    """The OCR's int8 model: its convolutions only, percentile 99.99 (tools/quantise.py)."""
    quantise_static(fp32, out, calib, input_name="image", op_types=["Conv"], percentile=99.99)


def _reader(path: Path, threads: int = 1) -> PlateReader:
    return PlateReader(cpu_session(path, threads), {"file": path.name, "charset": CHARSET})


def selection_accuracy(reader: PlateReader, images: list[np.ndarray], texts: list[str],
                       region: str | None = None) -> float:
    hits = sum(resolve(reader.probabilities(img), region).text == t
               for img, t in zip(images, texts))
    return round(hits / max(len(texts), 1), 4)


def ms_per_crop(reader: PlateReader, images: list[np.ndarray], n: int = 300) -> float:
    """Median ms of one model run (batch 1) over ``n`` crops, after a warm-up."""
    xs = [to_model_input(images[i % len(images)]) for i in range(n)]
    sess, name = reader._session, reader._input
    for x in xs[:20]:
        sess.run(None, {name: x})
    times = []
    for x in xs:
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1000)
    return round(float(np.median(times)), 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Export the plate OCR to ONNX and measure it.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, default=Path("runs/ocr/best.pt"),
                        help="trained weights (best.pt from tools/train_ocr.py)")
    source.add_argument("--fp32-onnx", type=Path,
                        help="an fp32 ONNX model instead of a checkpoint (tools/soup_ocr.py "
                             "writes one); it is quantised and measured the same way")
    p.add_argument("--models", type=Path, default=bundled_models_dir(), help="models folder")
    p.add_argument("--datasets", type=Path, default=DATASETS, help="shared datasets folder")
    p.add_argument("--synth-val", type=Path, default=Path("data/synth_val_s2.npz"),
                   help="synthetic validation set")
    p.add_argument("--synth-train", type=Path, default=Path("data/synth_train_s1.npz"),
                   help="synthetic training set (calibration samples)")
    p.add_argument("--train-metrics", type=Path, default=Path("runs/ocr/metrics.json"),
                   help="metrics.json of the training run (sample counts, seed)")
    p.add_argument("--version", required=True,
                   help="model version for the manifest (e.g. 1.2.0; bump it for every export)")
    p.add_argument("--synthetic-seed", default="1", help="seed(s) of the synthetic training "
                   "sets, for the manifest (e.g. \"1,3\")")
    p.add_argument("--training-note", default=None,
                   help="free text for the manifest describing the training run(s)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation sets")
    p.add_argument("--dry-run", action="store_true",
                   help="write into a temporary folder, not models/ (pipeline check)")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ocr_export_"))
    fp32, int8 = work / "plate_ocr_fp32.onnx", work / "plate_ocr_int8.onnx"
    if args.fp32_onnx:
        try:
            arch = onnx_arch(args.fp32_onnx)
        except (OSError, ValueError) as exc:
            p.error(f"--fp32-onnx {exc}")
        shutil.copyfile(args.fp32_onnx, fp32)
        ck_metrics = {}
    else:
        ck_metrics, arch = export_fp32(args.checkpoint, fp32)

    real_train, _, _ = load_real("train", args.datasets)
    val_x, val_t, val_names = load_real("val", args.datasets)
    pt = [(x, t) for x, t, n in zip(val_x, val_t, val_names) if n == "plate-text"]
    sv = np.load(args.synth_val)
    s_imgs = [img for img in sv["images"][:1500]]
    s_txt = sv["texts"][:1500].tolist()
    st = np.load(args.synth_train, mmap_mode="r")["images"]
    rng = np.random.default_rng(0)
    calib = [to_model_input(real_train[i]) for i in rng.choice(len(real_train), 150, False)]
    calib += [to_model_input(st[int(i)]) for i in rng.choice(len(st), 150, False)]
    quantise(fp32, int8, calib)

    report: dict = {"checkpoint": str(args.fp32_onnx or args.checkpoint),
                    "checkpoint_metrics": ck_metrics}
    readers = {"fp32": _reader(fp32), "int8": _reader(int8)}
    for name, reader in readers.items():
        report[name] = {
            "size_bytes": (fp32 if name == "fp32" else int8).stat().st_size,
            "plate_text_val_top1": selection_accuracy(reader, [x for x, _ in pt],
                                                      [t for _, t in pt]),
            "synthetic_val_top1": selection_accuracy(reader, s_imgs, s_txt),
            "ms_per_crop_median": ms_per_crop(reader, [x for x, _ in pt]),
        }
    f, q = report["fp32"], report["int8"]
    ship_int8 = (q["plate_text_val_top1"] >= f["plate_text_val_top1"] - 0.01
                 and q["synthetic_val_top1"] >= f["synthetic_val_top1"] - 0.01)
    report["shipped"] = "int8" if ship_int8 else "fp32"
    if not args.no_eval:  # measuring only: these numbers decide nothing above
        for name, reader in readers.items():
            for ds in ("eval-us-crops", "eval-br-crops"):
                res = evaluate(args.datasets / ds, Recognizer(reader)).to_json()
                report[name][ds] = {k: res[k] for k in ("top1_accuracy", "top5_accuracy",
                                                        "ms_per_image")}
    print(json.dumps(report, indent=2))
    if args.dry_run:
        return 0

    shipped, other = (int8, fp32) if ship_int8 else (fp32, int8)
    other_name = "fp32" if ship_int8 else "int8"
    args.models.mkdir(parents=True, exist_ok=True)
    main_file = args.models / "plate_ocr.onnx"
    alt_file = args.models / f"plate_ocr_{other_name}.onnx"
    for stale in args.models.glob("plate_ocr_*.onnx"):
        stale.unlink()
    shutil.copyfile(shipped, main_file)
    shutil.copyfile(other, alt_file)
    train_metrics = (json.loads(args.train_metrics.read_text())
                     if args.train_metrics.exists() else {})
    chosen = report[report["shipped"]]
    seeds = [int(x) for x in str(args.synthetic_seed).split(",") if x.strip()]
    entry = {
        "version": args.version,
        "file": main_file.name,
        "sha256": file_sha256(main_file),
        "size_bytes": main_file.stat().st_size,
        "precision": report["shipped"],
        f"file_{other_name}": alt_file.name,
        f"sha256_{other_name}": file_sha256(alt_file),
        "input": {"name": "image", "shape": [1, 1, OCR_INPUT_HEIGHT, OCR_INPUT_WIDTH],
                  "layout": "NCHW", "dtype": "float32",
                  "meaning": "grey plate crop squashed to 144x48, values 0..255 "
                             "(agent.vision.crops.to_model_input)"},
        "output": {"name": "probs", "shape": [1, 36, len(CHARSET) + 1],
                   "meaning": "per-column CTC class probabilities, class 0 = blank"},
        "charset": CHARSET,
        "architecture": f"CNN (strided conv) + dilated 1-D conv sequence head, CTC "
                        f"(tools/ocr_net.py, ARCHS[{arch!r}])",
        "trained_on": TRAINED_ON,
        "synthetic_samples": train_metrics.get("synthetic_samples"),
        "synthetic_sets": train_metrics.get("synthetic_sets"),
        "synthetic_seed": seeds[0] if len(seeds) == 1 else seeds,
        "synthetic_generator": "python -m tools.synth.generate --count N --seed S "
                               "(deterministic per seed)",
        "synthetic_val": args.synth_val.name,  # the synthetic selection set, named by its seed
        "training": {k: train_metrics.get(k) for k in ("steps", "seed", "batch", "real_share",
                                                       "real_train_crops", "init", "best",
                                                       "arch", "precision")},
        "training_note": args.training_note,
        "accuracy": {
            "selection_sets": {"plate_text_val_top1": chosen["plate_text_val_top1"],
                               "synthetic_val_top1": chosen["synthetic_val_top1"]},
            **{ds: chosen.get(ds) for ds in ("eval-us-crops", "eval-br-crops")},
            "int8_vs_fp32": {k: {kk: v for kk, v in report[k].items()}
                             for k in ("fp32", "int8")},
        },
        "ms_per_crop_median": chosen["ms_per_crop_median"],
        "licence": "Apache-2.0 (weights trained by the PlateGate team)",
    }
    update_manifest_entry(args.models, "plate_ocr", entry)
    print(f"wrote {main_file} ({report['shipped']}), {alt_file} and the manifest entry",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
