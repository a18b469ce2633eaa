"""What the tracker takes (a Sighting: one plate in one frame) and the interface it offers.

The tracker itself is agent.tracking.passes.PassTracker (boxes, motion, a vote over
characters); it sits behind `Tracker` so the pipeline does not depend on how it groups.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent.reads import Candidate, ReadEvent


@dataclass(frozen=True)
class Sighting:
    """One plate read in one frame."""

    text: str
    confidence: float
    seen_at: float
    box: tuple[int, int, int, int]
    candidates: tuple[Candidate, ...] = ()
    plate_crop_jpeg: bytes | None = None
    vehicle_jpeg: bytes | None = None
    char_confidences: tuple[float, ...] = ()
    frame_size: tuple[int, int] | None = None   # width, height of the frame it was seen in
    weak: bool = False   # below the read cut, kept as evidence for the pass (agent.tracking.passes)
    fits_format: bool = True   # the text fits a plate format of the tables (agent.vision.formats)
    detection_score: float | None = None   # the detector's plate score (None: read without the detector)


class Tracker(Protocol):
    def observe(self, sighting: Sighting) -> list[ReadEvent]:
        """Take one sighting; return any read events that are now complete."""

    def flush(self, now: float, force: bool = False) -> list[ReadEvent]:
        """Return read events whose vehicle has left (or all of them when `force`)."""


def similar(a: str, b: str, max_edits: int = 2) -> bool:
    """Two reads of one plate: equal, one a part of the other (a plate entering the frame), or a
    couple of characters apart (a misread frame)."""
    if a == b:
        return True
    if min(len(a), len(b)) >= 3 and (a in b or b in a):
        return True
    return _edit_distance(a, b, max_edits) <= max_edits


def _edit_distance(a: str, b: str, limit: int) -> int:
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
