"""The plate detector's int8 twin: quantise, measure against fp32 on TRAINING val, ship by rule.

    PLATEGATE_DATASETS=/work/shared/datasets .venv/bin/python tools/quantise_detector.py \
        --pin-cpu 1 --candidate /tmp/det_int8   # also a full models folder to measure with
                                                # --models, whatever the rule says
    # writes models/ (or --out DIR) only when the rule below holds; exit 1 when it fails

Why: at 4K the detector model is most of a frame's cost (40 of 51 ms at 1344 x 768); the
target is 40 ms end to end. No retraining: the shipped fp32 weights are quantised statically
(tools/quantise.py: QDQ, int8 weights per channel, uint8 activations with the calibration's
minimum-maximum ranges) with two fp32 islands:

- the stem (the convolution reading the 3-channel input): onnxruntime's int8 convolution with
  3 input channels is slower than the fp32 one (about 21 against 8 ms at 1344 x 768, profiled);
- the two heads (the 1x1 convolutions giving ``heat`` and ``reg``, and the sigmoid): the score
  meets thresholds (0.5 detect, 0.6 for reads of no plate format) and an 8-bit logit moves it
  near 0.5 in steps of about 0.02; the box size and offset decide the OCR's crop, whose reading
  changes with a few pixels of framing (docs/benchmarks.md, framing stability).

Calibration: ``--calib-scenes`` scenes per TRAINING set (train split only, seeded), run through
``PlateDetector`` itself with the fp32 model so the tensors are exactly what the agent feeds
(the pass plan, resize, normalisation, padding), each cut to a 256 x 256 window (the training
crop; one shape, as the percentile calibration needs, and bounded memory: onnxruntime keeps
every activation of every calibration tensor). Evaluation sets are never read for it.

Decision (written before any evaluation set was measured; docs/detection.md, "int8 detector"):
the int8 model ships when, against the fp32 model, it loses at most one plate on each of
(a) the training sets' val splits: detection recall, IoU >= 0.5, plates >= 16 px, at the
manifest threshold; (b) the detector-framed val (tools/framed_val.py): detection recall and
(c) top-1 of the agent's read. Then the evaluation scenes are measured for the manifest (both
precisions): they decide nothing. The fp32 model is kept beside the int8 one
(``plate_detector_fp32.onnx``, ``file_fp32`` in the manifest), as the OCR's is.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir  # noqa: E402
from agent.vision.detector import MODEL_NAME, PlateDetector  # noqa: E402
from agent.vision.models import (ModelError, cpu_session, file_sha256, model_entry,  # noqa: E402
                                 open_session, update_manifest_entry)
from agent.vision.ocr import PlateReader  # noqa: E402
from agent.vision.recognizer import Recognizer  # noqa: E402
from tools.detector_figures import EVAL_SETS, eval_figures, training_figures  # noqa: E402
from tools.framed_val import trace  # noqa: E402
from tools.quantise import quantise  # noqa: E402
from tools.train_detector import TRAINING_SETS  # noqa: E402
from tools.val_data import DATASETS, plate_text_val, scene_rows  # noqa: E402

WINDOW = 256  # calibration window (px of model input), the detector's training crop
PERCENTILE = None  # min-max ranges; percentiles clip the rare plate activations (docs)
MAX_LOSS = 1  # plates the int8 model may lose against fp32 on each decision figure
FP32_FILE = "plate_detector_fp32.onnx"
HEAD_OUTPUTS = ("heat", "reg")  # kept fp32 with the convolution that makes each


def fp32_islands(model_path: Path) -> list[str]:
    """Names of the nodes kept fp32: the convolution(s) reading the model input, and each head
    output's chain back to (and including) its convolution."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    image = graph.input[0].name
    keep = [n.name for n in graph.node if n.op_type == "Conv" and image in n.input]
    producer = {out: n for n in graph.node for out in n.output}
    for output in HEAD_OUTPUTS:
        node = producer.get(output)
        while node is not None:
            keep.append(node.name)
            if node.op_type == "Conv":
                break
            node = producer.get(node.input[0])
    return keep


class _Recorder:
    """Session wrapper that keeps every tensor the detector feeds the fp32 model."""

    def __init__(self, session) -> None:
        self.session, self.fed = session, []

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feeds):
        self.fed.append(next(iter(feeds.values())))
        return self.session.run(names, feeds)


def calibration_tensors(session, entry: dict, datasets: Path, per_set: int,
                        seed: int = 0) -> list[np.ndarray]:
    """256 x 256 windows of what the detector feeds the model on TRAINING-split scenes."""
    rng = np.random.default_rng(seed)
    recorder = _Recorder(session)
    detector = PlateDetector(recorder, entry)
    for name in TRAINING_SETS:
        rows = scene_rows(name, "train", datasets)
        for i in rng.choice(len(rows), min(per_set, len(rows)), replace=False):
            image = cv2.imread(str(Path(datasets) / name / rows[int(i)]["image"]), cv2.IMREAD_COLOR)
            if image is not None:
                detector.detect(image)
    windows = []
    for tensor in recorder.fed:
        h, w = tensor.shape[2:]
        y = int(rng.integers(0, max(1, h - WINDOW + 1)))
        x = int(rng.integers(0, max(1, w - WINDOW + 1)))
        window = np.zeros((1, 3, WINDOW, WINDOW), np.float32)  # 0 = the padding value
        cut = tensor[:, :, y:y + WINDOW, x:x + WINDOW]
        window[:, :, :cut.shape[2], :cut.shape[3]] = cut
        windows.append(window)
    return windows


def within(int8: int, fp32: int) -> bool:
    return int8 >= fp32 - MAX_LOSS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=bundled_models_dir(), help="models folder read")
    p.add_argument("--out", type=Path, default=None,
                   help="models folder written (default: --models); another folder gets a "
                        "full copy, for measuring with --models")
    p.add_argument("--candidate", type=Path, default=None,
                   help="also write a full models folder with the int8 model here whatever "
                        "the rule says (to measure it with --models; never ships)")
    p.add_argument("--datasets", type=Path, default=DATASETS)
    p.add_argument("--calib-scenes", type=int, default=40,
                   help="training-split scenes per training set for calibration (default 40)")
    p.add_argument("--version", default="1.1", help="manifest version of the int8 model")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation scenes")
    p.add_argument("--pin-cpu", type=int, default=None, help="pin to one core (timing)")
    args = p.parse_args(argv)
    if args.candidate and args.candidate.resolve() == args.models.resolve():
        p.error(f"--candidate {args.candidate} is the models folder read; the candidate "
                "is written whatever the rule says, so it must be another folder")
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
    entry = model_entry(args.models, MODEL_NAME)
    key = "file_fp32" if entry.get("precision") == "int8" else "file"
    fp32_session, _ = open_session(args.models, MODEL_NAME, file_key=key)

    with tempfile.TemporaryDirectory(prefix="det_int8_") as work:
        return run(args, entry, key, fp32_session, Path(work) / "plate_detector_int8.onnx")


def run(args, entry: dict, key: str, fp32_session, int8_path: Path) -> int:
    """Quantise into ``int8_path``, measure both, apply the rule, write when it holds."""
    fp32_path = args.models / entry[key]
    islands = fp32_islands(fp32_path)
    calib = calibration_tensors(fp32_session, entry, args.datasets, args.calib_scenes)
    quantise(fp32_path, int8_path, calib, op_types=None, nodes_to_exclude=islands,
             percentile=PERCENTILE)
    del calib

    int8_session = cpu_session(int8_path)
    reader = PlateReader.from_models(args.models)
    crops = plate_text_val(args.datasets)
    traced = trace(crops, args.datasets)
    report: dict = {"calibration": {"scenes_per_set": args.calib_scenes, "window": WINDOW,
                                    "percentile": PERCENTILE, "fp32_nodes": islands},
                    "load_average": [round(v, 2) for v in os.getloadavg()]}
    recognizers = {}
    for name, session, path in (("fp32", fp32_session, fp32_path),
                                ("int8", int8_session, int8_path)):
        recognizers[name] = Recognizer(reader, PlateDetector(session, entry))
        report[name] = training_figures(recognizers[name], path, traced, args.datasets)
    f, q = report["fp32"], report["int8"]
    plates = f["framed_val"]["plates"]
    checks = {
        "training_val_recall": within(q["training_val"]["found"], f["training_val"]["found"]),
        "framed_val_recall": within(round(q["framed_val"]["detection_recall"] * plates),
                                    round(f["framed_val"]["detection_recall"] * plates)),
        "framed_val_top1": within(round(q["framed_val"]["top1"] * plates),
                                  round(f["framed_val"]["top1"] * plates)),
    }
    report["rule"] = {"max_plates_lost": MAX_LOSS, "checks": checks}
    ship_int8 = all(checks.values())
    report["shipped"] = "int8" if ship_int8 else "fp32"
    if not args.no_eval:  # measuring only: these figures decide nothing above
        for name, recognizer in recognizers.items():
            report[name].update(eval_figures(recognizer, args.datasets))
    print(json.dumps(report, indent=1))
    if args.candidate:
        write(args, args.candidate, entry, fp32_path, int8_path, report)
    if not ship_int8:
        print("int8 not shipped: the rule failed (see rule.checks)", file=sys.stderr)
        return 1
    write(args, args.out or args.models, entry, fp32_path, int8_path, report)
    return 0


def write(args, out: Path, entry: dict, fp32_path: Path, int8_path: Path,
          report: dict) -> None:
    """Put the int8 model in ``out`` as ``plate_detector.onnx`` with its fp32 twin, and rewrite
    the manifest entry (everything the fp32 entry said, plus precision, twin and figures)."""
    if out != args.models:
        shutil.copytree(args.models, out, dirs_exist_ok=True)
    fp32_bytes = fp32_path.read_bytes()
    (out / FP32_FILE).write_bytes(fp32_bytes)
    main_file = out / entry["file"]
    shutil.copyfile(int8_path, main_file)
    chosen = report["int8"]
    new = dict(entry)
    new.update({
        "version": args.version,
        "sha256": file_sha256(main_file),
        "size_bytes": main_file.stat().st_size,
        "precision": "int8",
        "file_fp32": FP32_FILE,
        "sha256_fp32": file_sha256(out / FP32_FILE),
        "quantization": {
            "tool": "tools/quantise_detector.py (tools/quantise.py: onnxruntime static QDQ)",
            "weights": "int8 per channel",
            "activations": "uint8, ranges: the minimum and maximum of the calibration "
                           "activations" if PERCENTILE is None else
                           f"uint8, ranges: percentile {PERCENTILE} of the calibration activations",
            "fp32_nodes": report["calibration"]["fp32_nodes"],
            "calibration": f"{args.calib_scenes} train-split scenes of each of "
                           f"{', '.join(TRAINING_SETS)} (seed 0), fed through PlateDetector "
                           f"with the fp32 model, one {WINDOW} x {WINDOW} window each pass",
            "from": f"fp32 version {entry.get('version')} (weights unchanged, not retrained)",
        },
    })
    accuracy = dict(entry.get("accuracy", {}))
    accuracy["training_val_splits_int8"] = chosen["training_val"]
    accuracy["framed_val_int8"] = chosen["framed_val"]
    accuracy["int8_vs_fp32"] = {k: report[k] for k in ("fp32", "int8")}
    for ds in EVAL_SETS:
        if ds in chosen:
            ocr_version = model_entry(args.models, "plate_ocr").get("version")
            accuracy[ds] = {**chosen[ds], "with": f"plate_ocr {ocr_version}, int8 detector"}
    accuracy["measured"] = (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                            + ", tools/quantise_detector.py, one thread, load average "
                            + ", ".join(map(str, report["load_average"])))
    new["accuracy"] = accuracy
    update_manifest_entry(out, MODEL_NAME, new)
    try:  # the written folder must load as the agent loads it
        PlateDetector.from_models(out)
        PlateDetector.from_models(out, file_key="file_fp32")
    except ModelError as exc:
        raise SystemExit(f"written models do not load: {exc}") from None
    print(f"wrote {main_file} (int8), {out / FP32_FILE} and the manifest entry", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
