"""A captured frame and the interface every frame source implements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Frame:
    image: np.ndarray        # BGR, uint8, HxWx3
    captured_at: float       # unix seconds when the frame was taken (or replayed)
    index: int               # position in the source, for logs and tests
    origin: str              # file name or stream id, for logs


class SourceEnded(Exception):
    """The source has no more frames (end of file or folder, not an error)."""


class SourceError(Exception):
    """The source cannot deliver frames (missing file, broken stream); the message says which."""


class FrameSource(Protocol):
    """Delivers frames one at a time; `read()` raises SourceEnded at the end, SourceError on failure.

    A corrupt single frame is skipped inside the source (logged and counted in
    `corrupt_frames`), because one bad frame must not stop a camera.
    """

    corrupt_frames: int

    def read(self) -> Frame: ...

    def close(self) -> None: ...
