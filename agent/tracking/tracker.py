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
    frames: int = 1
    texts: set[str] = field(default_factory=set)


class WindowTracker:
    """Merges sightings of the same plate text seen within `merge_window_s` of each other."""

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
            if sighting.text in track.texts or track.best.text in names:
                track.frames += 1
                track.last_seen = max(track.last_seen, sighting.seen_at)
                track.texts |= names
                if sighting.confidence > track.best.confidence:
                    track.best = sighting
                return done
        self._tracks.append(_Track(best=sighting, first_seen=sighting.seen_at, last_seen=sighting.seen_at,
                                   texts=set(names)))
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
