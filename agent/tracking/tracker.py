"""Group sightings of one plate across frames into one read event.

This first tracker merges sightings whose texts agree (exactly, or one is among the
other's top candidates) within a time window. It sits behind the `Tracker`
interface so a full multi-frame tracker (boxes, motion, vote over characters) can
replace it without touching the pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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


class Tracker(Protocol):
    def observe(self, sighting: Sighting) -> list[ReadEvent]:
        """Take one sighting; return any read events that are now complete."""

    def flush(self, now: float, force: bool = False) -> list[ReadEvent]:
        """Return read events whose vehicle has left (or all of them when `force`)."""


@dataclass
class _Track:
    best: Sighting
    first_seen: float
    last_seen: float
    last_box: tuple[int, int, int, int]
    frames: int = 1
    texts: set[str] = field(default_factory=set)


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


class WindowTracker:
    """Merges sightings of one plate seen within `merge_window_s` of each other.

    Sightings merge when their texts are equal, or similar (see `similar`) and the plate is
    near where the track last saw it: two cars with sequential plates side by side stay two
    reads. The read keeps the most confident full-length sighting, so a plate half in the
    frame does not win over the whole plate.
    """

    def __init__(self, camera_id: str, merge_window_s: float, min_frames: int = 1,
                 latitude: float | None = None, longitude: float | None = None):
        self.camera_id = camera_id
        self.merge_window_s = merge_window_s
        self.min_frames = min_frames
        self.latitude = latitude
        self.longitude = longitude
        self._tracks: list[_Track] = []

    def observe(self, sighting: Sighting) -> list[ReadEvent]:
        done = self.flush(sighting.seen_at)
        names = {sighting.text} | {c.text for c in sighting.candidates[:3]}
        for track in self._tracks:
            if sighting.text in track.texts or (
                    _near(sighting.box, track.last_box)
                    and any(similar(name, text) for name in names for text in track.texts)):
                track.frames += 1
                track.last_seen = max(track.last_seen, sighting.seen_at)
                track.last_box = sighting.box
                track.texts |= names
                if _rank(sighting) > _rank(track.best):
                    track.best = sighting
                return done
        self._tracks.append(_Track(best=sighting, first_seen=sighting.seen_at, last_seen=sighting.seen_at,
                                   last_box=sighting.box, texts=set(names)))
        return done

    def flush(self, now: float, force: bool = False) -> list[ReadEvent]:
        finished = [t for t in self._tracks if force or now - t.last_seen > self.merge_window_s]
        self._tracks = [t for t in self._tracks if t not in finished]
        return [self._to_read(t) for t in finished if t.frames >= self.min_frames]

    def pending(self) -> int:
        return len(self._tracks)

    def _to_read(self, track: _Track) -> ReadEvent:
        best = track.best
        return ReadEvent(
            plate=best.text, confidence=best.confidence, seen_at=track.first_seen,
            camera_id=self.camera_id, latitude=self.latitude, longitude=self.longitude,
            candidates=best.candidates, plate_crop_jpeg=best.plate_crop_jpeg,
            vehicle_jpeg=best.vehicle_jpeg, frames=track.frames,
        )


def _near(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Plate centres within a few plate widths: the same vehicle between consecutive frames."""
    ax, ay = a[0] + a[2] / 2, a[1] + a[3] / 2
    bx, by = b[0] + b[2] / 2, b[1] + b[3] / 2
    reach = 3 * max(a[2], b[2], 1)
    return abs(ax - bx) <= reach and abs(ay - by) <= reach


def _rank(sighting: Sighting) -> tuple[int, float]:
    """Longer reads first (a partial plate is shorter), then confidence."""
    return (len(sighting.text), sighting.confidence)
