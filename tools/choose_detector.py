"""A retrained detector against the shipped one: measure both on TRAINING data, ship by rule.

    .venv/bin/python tools/train_detector.py --out runs/detlite --export-only \
        --models-dir /tmp/detlite_models          # the candidate: its ONNX and manifest entry
    PLATEGATE_DATASETS=/work/shared/datasets .venv/bin/python tools/choose_detector.py \
        /tmp/detlite_models [--pin-cpu 1] [--install]
    # prints both models' figures and the rule's checks; exit 1 when the rule fails;
    # --install puts the candidate into models/ (with its figures) only when it holds

Why: a new network (``train_detector.py --arch lite``, issue 20's 4K frame in 40 ms on one
core) changes every box, so it must show on the data we may select on that it finds and frames
plates as well as the model it replaces. The OCR is the shipped one for both.

Rule (docs/detection.md, "Lite detector", written before any candidate was measured): the
candidate ships when, against the shipped detector, it
(a) loses at most MAX_LOSS plates of detection recall on the training sets' val splits
    (IoU >= 0.5, plates >= 16 px, each at its own manifest threshold), and its precision there
    is at most MAX_PRECISION_DROP lower;
(b) on the detector-framed val (tools/framed_val.py) loses at most MAX_LOSS plates of
    detection recall and MAX_LOSS of the agent's top-1 read of its box, and lets at most
    MAX_EXTRA_WRONG more wrong reads through the default cut;
(c) is faster: its model alone at 1344 x 768 (the 4K pass) takes less CPU time.
The evaluation scenes are then measured for the manifest and decide nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir  # noqa: E402
from agent.vision.detector import MODEL_NAME, PlateDetector  # noqa: E402
from agent.vision.models import (ModelError, model_entry, open_session,  # noqa: E402
                                 update_manifest_entry)
from agent.vision.ocr import PlateReader  # noqa: E402
from agent.vision.recognizer import Recognizer  # noqa: E402
from tools.detector_figures import eval_figures, training_figures  # noqa: E402
from tools.framed_val import trace  # noqa: E402
from tools.val_data import DATASETS, plate_text_val  # noqa: E402

MAX_LOSS = 3  # plates a retrained detector may lose on each recall / top-1 figure
MAX_PRECISION_DROP = 0.01  # on the training sets' val splits
MAX_EXTRA_WRONG = 1  # more wrong reads through the cut on the detector-framed val


def checks(shipped: dict, candidate: dict) -> dict[str, bool]:
    """The rule of the module docstring over two ``training_figures`` reports."""
    s_tv, c_tv = shipped["training_val"], candidate["training_val"]
    s_fv, c_fv = shipped["framed_val"], candidate["framed_val"]
    plates = s_fv["plates"]

    def count(figures: dict, key: str) -> int:
        return round(figures[key] * plates)

    return {
        "training_val_recall": c_tv["found"] >= s_tv["found"] - MAX_LOSS,
        "training_val_precision": c_tv["precision"] >= s_tv["precision"] - MAX_PRECISION_DROP,
        "framed_val_recall": count(c_fv, "detection_recall")
        >= count(s_fv, "detection_recall") - MAX_LOSS,
        "framed_val_top1": count(c_fv, "top1") >= count(s_fv, "top1") - MAX_LOSS,
        "framed_val_wrong_reads": c_fv["accepted"]["wrong"]
        <= s_fv["accepted"]["wrong"] + MAX_EXTRA_WRONG,
        "faster": candidate["model_cpu_ms_1344x768"] < shipped["model_cpu_ms_1344x768"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("candidate", type=Path,
                   help="folder with the candidate plate_detector ONNX file and its manifest "
                        "entry (train_detector.py --export-only --models-dir DIR)")
    p.add_argument("--models", type=Path, default=bundled_models_dir(),
                   help="the shipped models (detector compared against; OCR used by both)")
    p.add_argument("--datasets", type=Path, default=DATASETS)
    p.add_argument("--install", action="store_true",
                   help="when the rule holds, put the candidate into --models with its figures")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation scenes")
    p.add_argument("--pin-cpu", type=int, default=None, help="pin to one core (timing)")
    args = p.parse_args(argv)
    if args.candidate.resolve() == args.models.resolve():
        p.error(f"the candidate folder {args.candidate} is the models folder")
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
    try:
        reader = PlateReader.from_models(args.models)
        shipped = PlateDetector.from_models(args.models)
        candidate = PlateDetector.from_models(args.candidate)
    except ModelError as exc:
        raise SystemExit(f"choose_detector: {exc}") from None
    traced = trace(plate_text_val(args.datasets), args.datasets)
    report: dict = {"load_average": [round(v, 2) for v in os.getloadavg()]}
    recognizers = {"shipped": Recognizer(reader, shipped),
                   "candidate": Recognizer(reader, candidate)}
    folders = {"shipped": args.models, "candidate": args.candidate}
    for name, recognizer in recognizers.items():
        path = folders[name] / model_entry(folders[name], MODEL_NAME)["file"]
        report[name] = training_figures(recognizer, path, traced, args.datasets)
    rule = checks(report["shipped"], report["candidate"])
    report["rule"] = {"max_plates_lost": MAX_LOSS, "max_precision_drop": MAX_PRECISION_DROP,
                      "max_extra_wrong_reads": MAX_EXTRA_WRONG, "checks": rule}
    if not args.no_eval:  # measuring only: these figures decide nothing above
        for name, recognizer in recognizers.items():
            report[name].update(eval_figures(recognizer, args.datasets))
    print(json.dumps(report, indent=1))
    if not all(rule.values()):
        failed = ", ".join(k for k, ok in rule.items() if not ok)
        print(f"candidate not shipped: the rule failed on {failed}", file=sys.stderr)
        return 1
    if args.install:
        install(args.candidate, args.models, report)
    return 0


def install(candidate: Path, models: Path, report: dict) -> None:
    """Copy the candidate's ONNX file over the shipped one and write its manifest entry with
    the figures measured here; the written folder must load as the agent loads it."""
    entry = dict(model_entry(candidate, MODEL_NAME))
    shutil.copyfile(candidate / entry["file"], models / entry["file"])
    chosen = report["candidate"]
    ocr_version = model_entry(models, "plate_ocr").get("version")
    accuracy = {"training_val_splits": chosen["training_val"],
                "framed_val": chosen["framed_val"],
                "against_previous": {k: report[k] for k in ("shipped", "candidate")},
                "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                + ", tools/choose_detector.py, one thread, load average "
                + ", ".join(map(str, report["load_average"]))}
    for name, figures in chosen.items():
        if name.startswith("eval-"):
            accuracy[name] = {**figures, "with": f"plate_ocr {ocr_version}"}
    entry["accuracy"] = accuracy
    entry["size_bytes"] = (models / entry["file"]).stat().st_size
    update_manifest_entry(models, MODEL_NAME, entry)
    try:
        open_session(models, MODEL_NAME)
    except ModelError as exc:
        raise SystemExit(f"installed detector does not load: {exc}") from None
    print(f"installed {models / entry['file']} (version {entry.get('version')})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
