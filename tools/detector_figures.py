"""The figures a detector is chosen by, and those it is only measured on.

Why a module: the int8 twin (tools/quantise_detector.py) and a retrained network
(tools/choose_detector.py) are held to rules on the same TRAINING-data figures, computed the
same way, through the agent's own PlateDetector and Recognizer; the evaluation scenes are
measured beside them for the record and decide nothing.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from agent.vision.detector import PlateDetector
from agent.vision.evaluate import evaluate
from agent.vision.recognizer import Recognizer
from tools.framed_val import measure
from tools.train_detector import TRAINING_SETS, load_split, match_stats

BENCH_SHAPE = (1, 3, 768, 1344)  # the 4K pass at min_plate_px 40
EVAL_SETS = ("eval-eu-scenes", "eval-br-scenes")


def training_val(detector: PlateDetector, datasets: Path) -> dict:
    """Recall (IoU >= 0.5, plates >= 16 px) and precision on the four training sets' val
    splits at the detector's threshold, as tools/train_detector.py selected the model."""
    matched = counted = true_pos = found = 0
    for sample in load_split(Path(datasets), TRAINING_SETS, "val"):
        image = cv2.imdecode(sample.jpeg, cv2.IMREAD_COLOR)
        preds = [(x, y, x + w, y + h, d.score) for d in detector.detect(image)
                 for x, y, w, h in [d.box]]
        m, n, tp, k = match_stats(preds, sample.boxes)
        matched, counted, true_pos, found = matched + m, counted + n, true_pos + tp, found + k
    return {"plates": counted, "found": matched, "recall": round(matched / max(counted, 1), 4),
            "detections": found, "precision": round(true_pos / max(found, 1), 4),
            "threshold": detector.score_threshold}


def model_cpu_ms(session, repeats: int = 15) -> float:
    """Median CPU ms of the model alone on a BENCH_SHAPE input (one thread)."""
    x = np.random.default_rng(0).normal(size=BENCH_SHAPE).astype(np.float32)
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: x})
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        session.run(None, {name: x})
        times.append((time.process_time() - c0) * 1000)
    return round(statistics.median(times), 2)


def training_figures(recognizer: Recognizer, path: Path, traced: list, datasets: Path) -> dict:
    """What a detector rule decides on (TRAINING data only), and its size and model time:
    recall and precision on the training sets' val splits, and on the detector-framed val
    (``traced``, tools/framed_val.py) its recall, the top-1 of the agent's read of its box and
    the reads the default cut accepts."""
    detector = recognizer.detector
    framed = measure(recognizer, traced)
    return {"size_bytes": path.stat().st_size,
            "model_cpu_ms_1344x768": model_cpu_ms(detector.session),
            "training_val": training_val(detector, datasets),
            "framed_val": {"plates": framed["plates"],
                           "detection_recall": framed["detection_recall"],
                           "top1": framed["detector_box"]["top1"],
                           "accepted": framed["detector_box"]["accepted"]}}


def eval_figures(recognizer: Recognizer, datasets: Path) -> dict:
    """``plategate eval`` on the evaluation scenes: measuring only, they decide nothing."""
    figures = {}
    for ds in EVAL_SETS:
        res = evaluate(datasets / ds, recognizer).to_json()
        figures[ds] = {k: res[k] for k in ("detection_recall", "top1_accuracy",
                                           "top5_accuracy", "ms_per_image")}
        figures[ds]["accepted"] = {k: res["accepted"][k] for k in
                                   ("correct_rate", "wrong_rate", "unmatched")}
    return figures

