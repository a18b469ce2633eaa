"""A captured frame and the interface every frame source implements."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np


@dataclass(frozen=True)
class Frame:
    image: np.ndarray        # BGR, uint8, HxWx3 (privacy masks already applied when it leaves agent.capture)
    captured_at: float       # wall-clock UTC, unix seconds, when the frame was taken (or replayed)
    index: int               # position in the source, for logs and tests
    origin: str              # file name or stream id (credentials redacted), for logs
    monotonic: float = field(default_factory=time.monotonic)  # time.monotonic() at capture: immune to clock steps


class SourceEnded(Exception):
    """The source has no more frames (end of file or folder, not an error)."""


class SourceError(Exception):
    """The source cannot deliver frames (missing file, broken stream); the message says which."""


class NoFrame(Exception):
    """No new frame within the wait: a live source between frames, or reconnecting. Not an error;
    the caller simply asks again (so a lost camera never crashes the capture stage)."""


class FrameSource(Protocol):
    """Delivers frames one at a time; `read()` raises SourceEnded at the end, SourceError on failure.

    A corrupt single frame is skipped inside the source (logged and counted in
    `corrupt_frames`), because one bad frame must not stop a camera. Live sources may
    also raise NoFrame when no new frame came within their short wait.
    """

    corrupt_frames: int

    def read(self) -> Frame: ...

    def close(self) -> None: ...


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Grey or BGRA images from a decoder as the 3-channel BGR every stage expects."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image
