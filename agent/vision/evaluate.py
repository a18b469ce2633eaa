"""Accuracy and speed of the Recognizer on a labelled folder (``plategate eval``).

Two layouts (DESIGN.md): *crops* (a folder with ``groundtruth.csv`` rows ``file,region,plate``)
and *scenes* (images each with a same-stem ``.txt`` of ``file\tx\ty\tw\th\tPLATE`` lines).
A plate counts as read when the text matches after upper-casing and removing spaces and
dashes. A file that cannot be read (missing, corrupt, truncated, empty) is reported in
``errors``, its plates count as not read, and the run goes on.

Beside top-1 and top-5 the eval reports the *operating point*: what the agent would emit at its
configured cut (``is_confident``). ``accepted.correct_rate`` is the plates with an accepted read
that is right, over all plates; ``accepted.wrong_rate`` the accepted reads that are wrong, over
all accepted reads at labelled plates. Top-1 says what the reader can do; the operating point
says what a unit sends, and a wrong accepted read is what sends an officer to the wrong car.
"""
from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from agent.config.schema import RecognizerConfig
from agent.vision.plate_formats import normalise_text
from agent.vision.recognizer import PlateHit, ReadCut, Recognizer, is_confident

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MATCH_IOU = 0.3  # a detection matches a labelled plate box above this overlap


class DatasetError(ValueError):
    """The folder is not a dataset in one of the two layouts."""


@dataclass
class Labelled:
    image: Path
    plates: list[tuple[str, tuple[int, int, int, int] | None]]  # text, box (None for crops)
    region: str | None = None


@dataclass
class EvalResult:
    format: str
    images: int = 0
    plates: int = 0
    detected: int = 0
    top1: int = 0
    top5: int = 0
    accepted_right: int = 0  # labelled plates whose read passes the cut and is right
    accepted_wrong: int = 0  # labelled plates whose read passes the cut and is wrong
    accepted_unmatched: int = 0  # reads passing the cut at no labelled plate (scenes)
    cut: dict = field(default_factory=dict)
    ms: list[float] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    misreads: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """The ``plategate eval --json`` object (DESIGN.md contract, plus ``errors``)."""
        ms = np.asarray(self.ms, dtype=np.float64)
        rate = (lambda n: round(n / self.plates, 4) if self.plates else None)
        return {
            "format": self.format,
            "images": self.images,
            "plates": self.plates,
            "detection_recall": rate(self.detected) if self.format == "scenes" else None,
            "top1_accuracy": rate(self.top1),
            "top5_accuracy": rate(self.top5),
            "accepted": self.accepted_json(),
            "ms_per_image": {"median": round(float(np.median(ms)), 3) if ms.size else None,
                             "p90": round(float(np.percentile(ms, 90)), 3) if ms.size else None},
            "errors": self.errors,
        }


    def accepted_json(self) -> dict:
        """The operating point at the cut (module docstring); counts beside the rates."""
        accepted = self.accepted_right + self.accepted_wrong
        return {
            "correct_rate": round(self.accepted_right / self.plates, 4) if self.plates else None,
            "wrong_rate": round(self.accepted_wrong / accepted, 4) if accepted else None,
            "correct": self.accepted_right, "wrong": self.accepted_wrong,
            "unmatched": self.accepted_unmatched, "cut": self.cut,
        }


def cut_json(cut: ReadCut) -> dict:
    """The thresholds of a cut, as the eval reports them."""
    return {"min_confidence": cut.min_confidence,
            "min_confidence_no_format": cut.min_confidence_no_format,
            "min_detection_score_no_format": cut.min_detection_score_no_format}


def read_image(path: Path) -> np.ndarray:
    """BGR image, or ValueError saying why the file cannot be used."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data.size == 0:
        raise ValueError(f"{path} is empty (0 bytes)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ValueError(f"{path} is not a decodable image (corrupt or truncated)")
    return image


def detect_layout(folder: Path) -> str:
    """``crops`` or ``scenes``; DatasetError naming the folder otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder {folder} does not exist")
    if (folder / "groundtruth.csv").is_file():
        return "crops"
    if any(p.suffix == ".txt" and any(p.with_suffix(s).exists() for s in IMAGE_SUFFIXES)
           for p in folder.iterdir()):
        return "scenes"
    raise DatasetError(f"{folder} is neither a crops set (no groundtruth.csv) nor a scenes set "
                       "(no image with a same-stem .txt)")


def dataset_region(codes: list[str]) -> str | None:
    """One region hint for a crops set: its single region code (e.g. ``br``), ``US`` when the
    rows name several two-letter codes (the OpenALPR US set names each plate's state)."""
    distinct = {c.strip().lower() for c in codes if c.strip()}
    if len(distinct) == 1:
        return distinct.pop()
    if len(distinct) > 1 and all(len(c) == 2 for c in distinct):
        return "US"
    return None


def load_crops(folder: Path) -> list[Labelled]:
    rows = []
    with open(folder / "groundtruth.csv", newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row or not row[0].strip():
                continue
            if len(row) < 3:
                raise DatasetError(f"{folder / 'groundtruth.csv'} line {lineno}: expected "
                                   f"file,region,plate, got {row!r}")
            rows.append(row)
    region = dataset_region([r[1] for r in rows])
    # A set of US states gives each crop its own state (``US-FL``): some state rules (no letter
    # O in Florida) hold for one state only, and "ar" alone would be Argentina.
    return [Labelled(folder / r[0].strip(), [(normalise_text(r[2]), None)],
                     f"US-{r[1].strip().upper()}" if region == "US" else region)
            for r in rows]


def load_scenes(folder: Path) -> list[Labelled]:
    items = []
    for txt in sorted(folder.glob("*.txt")):
        image = next((txt.with_suffix(s) for s in IMAGE_SUFFIXES
                      if txt.with_suffix(s).exists()), None)
        plates = []
        for lineno, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.strip().split("\t")
            if len(parts) < 6:
                if line.strip():
                    log.warning("label line skipped file=%s line=%d reason=expected 6 fields",
                                txt, lineno)
                continue
            x, y, w, h = (int(float(v)) for v in parts[1:5])
            if image is None:
                image = folder / parts[0]
            plates.append((normalise_text(parts[5]), (x, y, w, h)))
        if plates:
            items.append(Labelled(image, plates))
    return items


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _score(result: EvalResult, truth: str, hit: PlateHit | None, image: Path,
           cut: ReadCut) -> None:
    if hit is None:
        return
    if is_confident(hit, cut):
        if normalise_text(hit.text) == truth:
            result.accepted_right += 1
        else:
            result.accepted_wrong += 1
    cands = [normalise_text(t) for t, _ in hit.candidates] or [normalise_text(hit.text)]
    if normalise_text(hit.text) == truth:
        result.top1 += 1
    else:
        result.misreads.append({"image": str(image), "truth": truth, "read": hit.text})
    if truth in cands[:5] or normalise_text(hit.text) == truth:
        result.top5 += 1


def evaluate(folder: Path, recognizer: Recognizer, region: str | None = None,
             cut: ReadCut | None = None) -> EvalResult:
    """Run the recognizer over a labelled folder (either layout); ``region`` overrides the
    hint a crops set's region column gives (scenes sets carry none); ``cut`` is the agent's
    read cut (the config's recognizer section; its defaults when None)."""
    cut = cut or RecognizerConfig()
    folder = Path(folder)
    layout = detect_layout(folder)
    items = load_crops(folder) if layout == "crops" else load_scenes(folder)
    if region:
        items = [replace(item, region=region) for item in items]
    if layout == "scenes" and recognizer.detector is None:
        raise DatasetError(f"{folder} is a scenes set: evaluating it needs the plate detector, "
                           "and models/manifest.json has no 'plate_detector' entry yet")
    result = EvalResult(layout, cut=cut_json(cut))
    for item in items:
        result.images += 1
        result.plates += len(item.plates)
        try:
            image = read_image(item.image)
        except ValueError as exc:
            result.errors.append({"image": str(item.image), "error": str(exc)})
            log.warning("eval image skipped file=%s reason=%s", item.image, exc)
            continue
        t0 = time.perf_counter()
        if layout == "crops":
            hits = [recognizer.read_crop(image, item.region)]
        else:
            hits = recognizer.recognize(image, item.region)
        result.ms.append((time.perf_counter() - t0) * 1000.0)
        if layout == "crops":
            _score(result, item.plates[0][0], hits[0], item.image, cut)
            continue
        used: set[int] = set()
        for truth, box in item.plates:
            best, best_iou = None, MATCH_IOU
            for k, hit in enumerate(hits):
                overlap = iou(box, hit.box)
                if k not in used and overlap >= best_iou:
                    best, best_iou = k, overlap
            if best is None:
                result.misreads.append({"image": str(item.image), "truth": truth, "read": None})
                continue
            used.add(best)
            result.detected += 1
            _score(result, truth, hits[best], item.image, cut)
        result.accepted_unmatched += sum(
            1 for k, hit in enumerate(hits) if k not in used and is_confident(hit, cut))
    return result
