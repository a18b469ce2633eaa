"""The read event: what the Tracker emits and every later stage consumes.

A read event is one vehicle's plate, merged over the frames it was seen in. It is
the unit that the policy decides on, the outbox stores and the egress gate sends,
so it is immutable and carries everything a destination *might* be allowed to see;
minimisation (dropping fields, hashing the plate, coarsening the location) happens
per destination, later, in the policy engine.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HotlistHit:
    """A read matched a plate on a signed hotlist; `purpose` is that list's purpose code."""

    list_id: str
    list_version: int
    purpose: str
    source: str


@dataclass(frozen=True)
class Candidate:
    """One alternative reading of the plate, best first in `ReadEvent.candidates`."""

    text: str
    confidence: float


@dataclass(frozen=True)
class ReadEvent:
    """One plate read, accepted by the Tracker.

    `seen_at` is the unix time (seconds) of the first frame the plate was seen in:
    retention and max-age rules count from it, never from when the read was queued.
    `last_seen` is the last such frame, `frames` how many there were, `direction` where the
    plate moved in the picture (agent.tracking.passes.direction); `plate` and `confidence`
    are the vote over all those frames and `candidates` its top 5. `evidence` is what let the
    pass count (agent.tracking.passes.PassTracker._evidence): "frame" (a frame's read passed the
    cut), "agreement" (weak reads agreed on the text) or "detection" (the detector followed a plate
    across the picture but no text was sure: `confidence` is then below the cut).
    """

    plate: str
    confidence: float
    seen_at: float
    camera_id: str
    read_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    latitude: float | None = None
    longitude: float | None = None
    candidates: tuple[Candidate, ...] = ()
    plate_crop_jpeg: bytes | None = None
    vehicle_jpeg: bytes | None = None
    frames: int = 1
    hits: tuple[HotlistHit, ...] = ()
    last_seen: float | None = None
    direction: str | None = None
    evidence: str = "frame"

    @property
    def is_hit(self) -> bool:
        return bool(self.hits)

    @property
    def text_is_sure(self) -> bool:
        """Whether the text itself was vouched for (a frame's read passed the cut, or weak
        reads agreed on it). A "detection" event's text is only the best guess, and a guess
        must never put a car on a hotlist: a false hit can mean a wrong stop."""
        return self.evidence != "detection"
