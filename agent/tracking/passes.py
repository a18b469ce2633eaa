"""One read event per vehicle pass: plate sightings tracked across frames, then a vote.

A sighting joins a track when it is where the track's plate should be by now (its last box
moved on by its velocity) and its text is like the track's texts, or when its box overlaps
that predicted box strongly (a badly blurred frame still belongs to the vehicle). Each track
takes at most one sighting per frame, so two vehicles in view at once stay two tracks. A
track ends when its plate has not been seen for `timeout_s` (`stopped_timeout_s` for a plate
that stood still: a stopped vehicle the detector loses for a while), when it has left the frame
(its predicted box is outside it), or when it has lasted `max_track_s`; it then becomes one
ReadEvent whose text is the per-character vote over all of its frames (agent.tracking.vote),
if one of three rules lets the pass count (a read above the cut, weak reads that agree, or a
plate the detector followed across the picture: PassTracker._evidence); the event says which.
A last glimpse of a plate that has just left (a fragment read after its track ended, within
`timeout_s`) joins nothing and starts nothing: it is counted in `late_sightings`.

Timestamps are the frames' capture times; `flush(now)` uses the same clock.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from agent.reads import Candidate, ReadEvent
from agent.tracking.tracker import Sighting, similar
from agent.tracking.vote import OUTLIER_EDITS, Reading, distance, vote
from agent.vision.evaluate import iou

OVERLAP_JOINS = 0.5        # IoU with the predicted box that joins whatever the text says
REACH_PLATE_WIDTHS = 2.5   # how far from the predicted centre a similar read may be, in plate widths
REACH_GROWTH = 4.0         # plus this many plate widths per second since the track was last seen
SMOOTHING = 0.5            # weight of the newest velocity measurement
STILL_SPEED = 0.5          # plate widths per second below which a plate stands still
MIN_TRAVEL_WIDTHS = 1.0    # the detection rule's least travel of a plate, in its own widths
EVIDENCE = ("frame", "agreement", "detection")  # the rules that let a pass count (PassTracker._evidence)
CROPS_KEPT = 5             # texts per track whose best crops are kept (a parked car is seen thousands of times)


def weak_read(hit: Any, floor: float, min_detection_score: float,
              formatless_min_score: float | None = None) -> bool:
    """A read below the cut that is still evidence for its pass, at least `floor` confident.

    One that fits a plate format needs the detector to be as sure it is a plate as the cut asks
    of format-less reads (sign lettering scored 0.50-0.54 there; docs/detection.md), so a sign
    re-read all day cannot add up to a read. One that fits no format (a vanity plate, a plate
    whose surround the OCR reads too) counts only with `formatless_min_score` given and a
    detector score that reaches it: it keeps its track alive and can carry the pass by the
    detection rule (PassTracker._evidence), but votes only where nothing better was read."""
    if not hit.text or hit.confidence < floor:
        return False
    score = getattr(hit, "detection_score", None)
    if getattr(hit, "format", None) is not None:
        return score is None or score >= min_detection_score
    return formatless_min_score is not None and score is not None and score >= formatless_min_score


def weak_cut(tracker: Any, recognizer: Any) -> Callable[[Any], bool]:
    """weak_read with the floors of the `tracker` and `recognizer` config sections (the agent,
    the capture probe and tools/bench_passes.py all use this one)."""
    formatless = tracker.detected_min_score if tracker.detected_frames else None
    return lambda hit: weak_read(hit, tracker.weak_min_confidence, recognizer.min_detection_score_no_format,
                                 formatless)


@dataclass
class _Pass:
    sightings: list[Sighting]
    last_box: tuple[int, int, int, int]
    velocity: tuple[float, float] = (0.0, 0.0)  # plate centre, pixels per second
    texts: set[str] = field(default_factory=set)
    best: dict[str, Sighting] = field(default_factory=dict)  # per text, its best sighting with crops

    @classmethod
    def start(cls, sighting: Sighting, names: set[str]) -> "_Pass":
        track = cls(sightings=[], last_box=sighting.box)
        track.add(sighting, names)
        return track

    @property
    def first_seen(self) -> float:
        return self.sightings[0].seen_at

    @property
    def last_seen(self) -> float:
        return self.sightings[-1].seen_at

    def predicted(self, at: float) -> tuple[float, float, float, float]:
        dt = at - self.last_seen
        x, y, w, h = self.last_box
        return (x + self.velocity[0] * dt, y + self.velocity[1] * dt, w, h)

    def add(self, sighting: Sighting, names: set[str]) -> None:
        dt = sighting.seen_at - self.last_seen if self.sightings else 0.0
        if dt > 0:
            (ax, ay), (bx, by) = _centre(self.last_box), _centre(sighting.box)
            measured = ((bx - ax) / dt, (by - ay) / dt)
            weight = SMOOTHING if len(self.sightings) > 1 else 1.0
            self.velocity = tuple(weight * m + (1 - weight) * v for m, v in zip(measured, self.velocity))
        self.sightings.append(self._keep_crops(sighting))
        self.last_box = sighting.box
        self.texts |= names

    def _keep_crops(self, sighting: Sighting) -> Sighting:
        """Crops are kept only on the best sighting of each of the CROPS_KEPT most confident texts;
        the others are stored without them (the vote needs only text and confidences)."""
        held = self.best.get(sighting.text)
        if held is None or _rank(sighting) > _rank(held):
            self.best[sighting.text] = sighting
            if len(self.best) > CROPS_KEPT:
                del self.best[min(self.best, key=lambda text: _rank(self.best[text]))]
        if sighting.plate_crop_jpeg is None and sighting.vehicle_jpeg is None:
            return sighting
        return dataclasses.replace(sighting, plate_crop_jpeg=None, vehicle_jpeg=None)

    def best_for(self, text: str) -> Sighting:
        """The sighting whose crops go with the read: the best one that read `text`, else the best."""
        if text in self.best:
            return self.best[text]
        return max(self.best.values(), key=_rank) if self.best else max(self.sightings, key=_rank)


class PassTracker:
    """Tracks plates across frames and emits one voted read event per vehicle pass."""

    def __init__(self, camera_id: str, timeout_s: float = 3.0, max_track_s: float = 300.0, min_frames: int = 1,
                 latitude: float | None = None, longitude: float | None = None, agreeing_frames: int = 4,
                 min_confidence: float = 0.7, stopped_timeout_s: float | None = None,
                 detected_frames: int = 0, detected_min_score: float = 0.7):
        self.camera_id = camera_id
        self.detected_frames = detected_frames          # 0: the detection rule is off
        self.detected_min_score = detected_min_score
        self.accepted_by = {kind: 0 for kind in EVIDENCE}  # events per rule that let the pass count
        self.stopped_timeout_s = 3 * timeout_s if stopped_timeout_s is None else stopped_timeout_s
        self.agreeing_frames = agreeing_frames
        self.min_confidence = min_confidence
        self.tracks_dropped = 0  # passes seen only in weak reads that did not agree enough
        self.timeout_s = timeout_s
        self.max_track_s = max_track_s
        self.min_frames = min_frames
        self.latitude = latitude
        self.longitude = longitude
        self.late_sightings = 0  # fragments of a plate that had just left, dropped (not a second pass)
        self._tracks: list[_Pass] = []
        self._gone: list[_Pass] = []  # tracks that left the frame within timeout_s: their late fragments

    def observe(self, sighting: Sighting) -> list[ReadEvent]:
        done = self.flush(sighting.seen_at)
        names = {sighting.text} | {c.text for c in sighting.candidates[:3]}
        track = self._best_track(sighting, names, self._tracks)
        if track is not None:
            track.add(sighting, names)
        elif self._best_track(sighting, names, self._gone) is not None:
            self.late_sightings += 1  # the last glimpse of a plate already emitted as it left
        else:
            self._tracks.append(_Pass.start(sighting, names))
        return done

    def flush(self, now: float, force: bool = False) -> list[ReadEvent]:
        self._gone = [t for t in self._gone if now - t.last_seen <= self.timeout_s]
        finished = [t for t in self._tracks if force or self._ended(t, now)]
        self._tracks = [t for t in self._tracks if t not in finished]
        self._gone += [t for t in finished if not force and self._left(t, now)]
        reads = []
        for track in finished:
            if len(track.sightings) < self.min_frames:
                continue
            read = self._to_read(track)
            evidence = self._evidence(track, read.plate)
            if evidence is None:
                self.tracks_dropped += 1
                continue
            self.accepted_by[evidence] += 1
            reads.append(read if evidence == read.evidence else dataclasses.replace(read, evidence=evidence))
        return reads

    def pending(self) -> int:
        return len(self._tracks)

    # -- association --------------------------------------------------------------------------------
    def _best_track(self, sighting: Sighting, names: set[str], tracks: list[_Pass]) -> _Pass | None:
        best, best_score = None, 0.0
        for track in tracks:
            if track.last_seen >= sighting.seen_at:
                continue  # one sighting per frame per track: a second plate in the frame is another vehicle
            predicted = track.predicted(sighting.seen_at)
            overlap = iou(predicted, sighting.box)
            width = max(predicted[2], sighting.box[2], 1)
            # from where it should be by now, or from where it was last (a vehicle that braked)
            reach = min(_gap(predicted, sighting.box), _gap(track.last_box, sighting.box)) / width
            alike = any(similar(a, b) for a in names for b in track.texts)
            limit = REACH_PLATE_WIDTHS + REACH_GROWTH * (sighting.seen_at - track.last_seen)
            if (alike and reach <= limit) or (overlap >= OVERLAP_JOINS and self._garbled(sighting, track)):
                score = overlap + (1.0 if alike else 0.0) + 1.0 / (1.0 + reach)
                if score > best_score:
                    best, best_score = track, score
        return best

    @staticmethod
    def _garbled(sighting: Sighting, track: _Pass) -> bool:
        """A read too unlike the track's to be called similar, yet sharing at least half its
        characters: a blurred frame of the same plate, not another vehicle's plate."""
        reference = track.sightings[-1].text
        return distance(reference, sighting.text) <= OUTLIER_EDITS * max(len(reference), 1)

    def _ended(self, track: _Pass, now: float) -> bool:
        if now - track.first_seen >= self.max_track_s:
            return True
        timeout = max(self.timeout_s, self.stopped_timeout_s) if self._still(track) else self.timeout_s
        return now - track.last_seen > timeout or self._left(track, now)

    @staticmethod
    def _still(track: _Pass) -> bool:
        """The plate stood still where it was last seen, not at an edge: a stopped vehicle whose
        plate the detector lost for a while (glare, a passing vehicle in front) is still there."""
        vx, vy = track.velocity
        width = max(track.last_box[2], 1)
        return (vx * vx + vy * vy) ** 0.5 < STILL_SPEED * width

    @staticmethod
    def _left(track: _Pass, now: float) -> bool:
        """Its plate has left the picture: the predicted centre is past an edge the plate was last
        seen within a plate's size of (not past any edge: a plate can ride near the bottom)."""
        size = track.sightings[-1].frame_size
        if size is None or len(track.sightings) < 3 or now <= track.last_seen:
            return False
        x, y, w, h = track.predicted(now)
        cx, cy = x + w / 2, y + h / 2
        lx, ly, lw, lh = track.last_box
        return ((cx >= size[0] and size[0] - (lx + lw) < lw) or (cx < 0 and lx < lw)
                or (cy >= size[1] and size[1] - (ly + lh) < lh) or (cy < 0 and ly < lh))

    def _evidence(self, track: _Pass, text: str) -> str | None:
        """Which rule lets the pass count (None: none does, the track is dropped).

        - "frame": one of its reads passed the cut on its own.
        - "agreement": seen only in weak reads, `agreeing_frames` of them that fit a plate format
          read exactly its text with a combined confidence 1 - prod(1 - c) that reaches the cut: a
          plate the OCR is unsure of in each frame but reads the same way in many is still read (a
          sign or a glitch rarely agrees that often). Reads that fit no format do not count here:
          on the training clips, passes they agreed on were misread more often than not.
        - "detection": no text agreed enough, but the detector scored a plate at
          `detected_min_score` or more in `detected_frames` of its frames, and the plate
          travelled at least MIN_TRAVEL_WIDTHS of its own widths across the picture: a vehicle
          passed with a plate in view (lettering on a wall or a parked van does not travel).
          Its text is the vote of unsure reads; the event says so (`evidence`) and its
          `confidence` is the vote's (0.01-0.56 on the training clips: docs/capture.md).
        """
        if any(not s.weak for s in track.sightings):
            return "frame"
        agreeing = [s.confidence for s in track.sightings if s.text == text and s.fits_format]
        doubt = 1.0
        for confidence in agreeing:
            doubt *= 1.0 - confidence
        if len(agreeing) >= self.agreeing_frames and 1.0 - doubt >= self.min_confidence:
            return "agreement"
        if self.detected_frames and self._detected(track):
            return "detection"
        return None

    def _detected(self, track: _Pass) -> bool:
        """The detection rule: enough frames where the detector was sure, a plate that travelled."""
        detected = [s for s in track.sightings
                    if s.detection_score is not None and s.detection_score >= self.detected_min_score]
        if len(detected) < self.detected_frames:
            return False
        first, last = detected[0].box, detected[-1].box
        width = max(first[2], last[2], 1)
        return _gap(first, last) >= MIN_TRAVEL_WIDTHS * width

    # -- the read event -----------------------------------------------------------------------------
    def _to_read(self, track: _Pass) -> ReadEvent:
        sightings = track.sightings
        # format-less weak reads vote only where nothing better was read (weak_read)
        voters = [s for s in sightings if s.fits_format or not s.weak] or sightings
        consensus = vote([Reading(s.text, s.confidence, tuple(s.char_confidences)) for s in voters])
        best = track.best_for(consensus.text)
        return ReadEvent(
            plate=consensus.text, confidence=consensus.confidence, seen_at=track.first_seen,
            camera_id=self.camera_id, latitude=self.latitude, longitude=self.longitude,
            candidates=tuple(Candidate(text, p) for text, p in consensus.candidates),
            plate_crop_jpeg=best.plate_crop_jpeg, vehicle_jpeg=best.vehicle_jpeg, frames=len(sightings),
            last_seen=track.last_seen, direction=direction(sightings[0].box, sightings[-1].box),
        )


def direction(first: tuple[int, int, int, int], last: tuple[int, int, int, int]) -> str:
    """Where the plate went in the picture: left, right, up, down; or approaching / receding /
    stationary when it hardly moved across (judged by its width)."""
    (ax, ay), (bx, by) = _centre(first), _centre(last)
    dx, dy = bx - ax, by - ay
    width = max(first[2], last[2], 1)
    if max(abs(dx), abs(dy)) < 0.5 * width:
        growth = last[2] / max(first[2], 1)
        return "approaching" if growth > 1.15 else "receding" if growth < 0.87 else "stationary"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _rank(sighting: Sighting) -> tuple[float, int]:
    return sighting.confidence, sighting.box[2] * sighting.box[3]


def _centre(box) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def _gap(a, b) -> float:
    """Distance between two boxes' centres, in pixels."""
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    return ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5
