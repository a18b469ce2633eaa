"""Detector + OCR as one stage: frames in, plate hits out.

One code path: the agent, ``plategate recognize`` and ``plategate eval`` all go through
Recognizer, so what is measured is what runs on the camera.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from agent.vision.crops import DETECTOR_MARGIN, crop_for_ocr
from agent.vision.models import load_manifest
from agent.vision.ocr import PlateReader, PlateText

if TYPE_CHECKING:  # the config module is not needed to read plates
    from agent.config.schema import RecognizerConfig

log = logging.getLogger(__name__)

DETECTOR_NAME = "plate_detector"


class NoDetectorError(RuntimeError):
    """Whole frames were given but no plate detector is installed."""


@dataclass
class PlateHit:
    """One plate found (and read) in a frame."""

    text: str
    confidence: float
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    candidates: list[tuple[str, float]] = field(default_factory=list)
    format: str | None = None
    char_confidences: list[float] = field(default_factory=list)
    detection_score: float | None = None

    def to_json(self) -> dict:
        """The ``plates[]`` object of the recognize contract (DESIGN.md)."""
        return {"text": self.text, "confidence": round(float(self.confidence), 4),
                "box": [int(v) for v in self.box],
                "candidates": [{"text": t, "confidence": round(float(c), 4)}
                               for t, c in self.candidates]}


class ReadCut(Protocol):
    """The cut's thresholds (agent.config.schema.RecognizerConfig has them)."""

    min_confidence: float
    min_confidence_no_format: float
    min_detection_score_no_format: float


def is_confident(hit: PlateHit, cut: ReadCut) -> bool:
    """The agent's cut: does this read count as a plate?

    Text that matches no plate format of our tables (bus lettering such as "ARRIVA", shop
    signs) needs stronger evidence than a read that fits a format: a higher read confidence
    and, where a detector found it, a higher detection score (sign lettering reads as
    confidently as a plate but looks less like one to the detector). The cuts were chosen on
    training-derived data only (plate-free crops of the training sets' val scenes and the
    plate-text val split; see docs/detection.md), never on the evaluation sets.
    """
    if not hit.text or hit.confidence < cut.min_confidence:
        return False
    if hit.format is not None:
        return True
    detector_agrees = (hit.detection_score is None
                       or hit.detection_score >= cut.min_detection_score_no_format)
    return hit.confidence >= cut.min_confidence_no_format and detector_agrees


def _hit(read: PlateText, box, score: float | None = None) -> PlateHit:
    return PlateHit(read.text, read.confidence, tuple(int(round(v)) for v in box),
                    list(read.candidates), read.format, list(read.char_confidences), score)


class Recognizer:
    """Finds plates in a frame (detector) and reads each one (OCR)."""

    def __init__(self, reader: PlateReader, detector=None, region: str | None = None):
        self.reader = reader
        self.detector = detector
        self.region = region  # the unit's region hint; a call's own hint overrides it

    @classmethod
    def from_models(cls, models_dir: Path, threads: int = 1, region: str | None = None,
                    **detector_options) -> "Recognizer":
        """The OCR from ``models_dir``, plus the detector when the manifest lists one.

        ``detector_options`` (min_plate_px, max_plate_px, ...) go to PlateDetector; they set the
        plate sizes this camera sees, which decides how far large frames are scaled down.
        """
        models_dir = Path(models_dir)
        reader = PlateReader.from_models(models_dir, threads)
        detector = None
        if DETECTOR_NAME in load_manifest(models_dir)["models"]:
            from agent.vision.detector import PlateDetector  # the detector's own module
            detector = PlateDetector.from_models(models_dir, threads=threads, **detector_options)
        else:
            log.warning("no plate detector in %s; only plate crops can be read",
                        models_dir / "manifest.json")
        return cls(reader, detector, region)

    @classmethod
    def from_config(cls, rec: RecognizerConfig) -> "Recognizer":
        """The recognizer a unit's ``recognizer`` config section (RecognizerConfig) asks for:
        the one place the agent and the camera check turn that section into a Recognizer."""
        return cls.from_models(rec.models_path, threads=rec.threads, region=rec.region,
                               min_plate_px=rec.min_plate_px, max_plate_px=rec.max_plate_px,
                               proposals=rec.detail_proposals)

    def read_crop(self, crop_bgr: np.ndarray, region: str | None = None) -> PlateHit:
        """Read an image that is already a plate crop; the box is the whole crop."""
        h, w = crop_bgr.shape[:2]
        return _hit(self.reader.read(crop_bgr, region or self.region), (0, 0, w, h))

    def recognize(self, frame_bgr: np.ndarray, region: str | None = None) -> list[PlateHit]:
        """Detect every plate in a frame and read it; raises NoDetectorError without one."""
        if self.detector is None:
            raise NoDetectorError("no plate detector installed (models/manifest.json has no "
                                  f"{DETECTOR_NAME!r} entry): whole frames cannot be read, "
                                  "only plate crops")
        region = region or self.region
        hits = []
        for det in self.detector.detect(frame_bgr):
            try:
                crop = detection_crop(frame_bgr, det)
            except ValueError as exc:
                log.debug("skipping detection box=%s reason=%s", det.box, exc)
                continue
            hits.append(_hit(self.reader.read(crop, region), det.box,
                             float(getattr(det, "score", 0.0))))
        return hits


def detection_crop(frame_bgr: np.ndarray, det,
                   margin: tuple[float, float] = DETECTOR_MARGIN) -> np.ndarray:
    """The OCR crop of one detection, cut as the agent cuts it (tools that measure the reader
    on detector boxes use this, so they measure what runs; ``margin`` is for choosing it)."""
    return crop_for_ocr(frame_bgr, det.box, getattr(det, "corners", None), margin)
