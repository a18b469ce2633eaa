"""Motion gating and the region of interest, in front of the plate recognizer.

Why: a roadside camera looks at an empty road most of the time. Detection and OCR cost tens
of milliseconds a frame; comparing a 160-pixel-wide grey copy of the frame with the previous
one costs well under one. Recognition runs only when something moved inside the region of
interest, plus one frame every `recheck_s` while plates are in view and nothing moves (a
vehicle stopped at a light stays one tracked pass instead of timing out and coming back as a
second). Detection sees only the region's bounding rectangle, cut from the full-resolution
frame, so the OCR always reads plates at full resolution.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from agent.capture.scene import RegionOfInterest


class MotionGate:
    """Did anything move inside the region since the previous frame? (frame differencing)"""

    def __init__(self, roi: RegionOfInterest, width: int = 160, threshold: int = 18, min_area: float = 0.002):
        self.roi = roi
        self.width = width
        self.threshold = threshold
        self.min_area = min_area
        self._previous: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._min_pixels = 1

    def moved(self, image: np.ndarray) -> bool:
        height, width = image.shape[:2]
        small_h = max(1, round(height * self.width / width))
        small = cv2.resize(image, (self.width, small_h), interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (3, 3), 0)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            self._mask = self._small_mask(width, height, grey.shape)
            return True
        changed = cv2.threshold(cv2.absdiff(grey, previous), self.threshold, 255, cv2.THRESH_BINARY)[1]
        if self._mask is not None:
            changed = cv2.bitwise_and(changed, self._mask)
        return cv2.countNonZero(changed) >= self._min_pixels

    def _small_mask(self, width: int, height: int, shape: tuple[int, ...]) -> np.ndarray | None:
        area = shape[0] * shape[1]
        mask = None
        if self.roi:
            (x0, y0, x1, y1), pixels, rect_mask = self.roi.geometry(width, height)
            full = np.zeros((height, width), np.uint8)
            full[y0:y1, x0:x1] = rect_mask
            mask = cv2.resize(full, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
            area = max(1, cv2.countNonZero(mask))
        self._min_pixels = max(1, int(round(self.min_area * area)))
        return mask


class SceneRecognizer:
    """Wraps a plate recognizer with the region of interest and the motion gate.

    Counters: `frames_recognized` (detector ran), `frames_skipped` (nothing moved).
    """

    def __init__(self, recognizer: Any, roi: RegionOfInterest, gate: MotionGate | None = None,
                 recheck_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.recognizer = recognizer
        self.roi = roi
        self.gate = gate
        self.recheck_s = recheck_s
        self.clock = clock
        self.frames_recognized = 0
        self.frames_skipped = 0
        self._plates_in_view = False
        self._last_run = float("-inf")

    def recognize(self, image: np.ndarray) -> list[Any]:
        now = self.clock()
        if self.gate is not None and not self.gate.moved(image):
            if not (self._plates_in_view and now - self._last_run >= self.recheck_s):
                self.frames_skipped += 1
                return []
        self._last_run = now
        self.frames_recognized += 1
        hits = self.recognize_in_roi(image)
        self._plates_in_view = bool(hits)
        return hits

    def recognize_in_roi(self, image: np.ndarray) -> list[Any]:
        """The plates inside the region of interest, with no motion gate and no gate state touched.

        The console's camera test calls this from its own thread while the recognize stage runs:
        sharing the stateful gate would skew both (a test frame would count as the stage's last).
        """
        height, width = image.shape[:2]
        (x0, y0, x1, y1), _, _ = self.roi.geometry(width, height)
        view = image[y0:y1, x0:x1] if self.roi else image
        hits = []
        for hit in self.recognizer.recognize(view):
            x, y, w, h = (int(v) for v in hit.box)
            if self.roi and _touches_cut(x, y, w, h, view.shape, (x0, y0, x1, y1), (width, height)):
                continue  # cut by the region's rectangle, not by the frame: a partial plate
            box = (x + x0, y + y0, w, h)
            if self.roi.contains(box, width, height):
                hits.append(_moved(hit, box))
        return hits


def _touches_cut(x: int, y: int, w: int, h: int, shape: Sequence[int], rect: tuple[int, int, int, int],
                 frame: tuple[int, int], margin: int = 2) -> bool:
    x0, y0, x1, y1 = rect
    return ((x <= margin and x0 > 0) or (y <= margin and y0 > 0)
            or (x + w >= shape[1] - margin and x1 < frame[0]) or (y + h >= shape[0] - margin and y1 < frame[1]))


def _moved(hit: Any, box: tuple[int, int, int, int]) -> Any:
    if dataclasses.is_dataclass(hit):
        return dataclasses.replace(hit, box=box)
    moved = copy.copy(hit)
    moved.box = box
    return moved
