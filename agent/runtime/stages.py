"""The four in-process stages of DESIGN.md's data flow, each a small `Stage`.

    CaptureStage ─frames (drop oldest)─▶ RecognizeStage ─sightings─▶ TrackStage ─reads─▶ AcceptStage ─▶ Outbox

Frames may be dropped (counted); sightings and reads travel on bounded blocking queues
and are never dropped: a full queue makes its producer wait (back-pressure), so a stuck
outbox stops the tracker, then the recognizer, and frames drop at the frame queue,
counted, while memory stays bounded. A read is *accepted* once `Outbox.accept` returns
(committed to disk); AcceptStage keeps a batch pending until then, so a crash retries the
batch instead of losing it. Before a read leaves the tracker it is journaled (a durable
commit, `Outbox.journal`), so one that dies with the process between the two stages is
accepted at the next start.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from agent.capture.frames import Frame, FrameSource, NoFrame, SourceEnded
from agent.capture.slot import SourceSlot
from agent.delivery.outbox import OutboxError, OutboxFull
from agent.reads import Candidate, ReadEvent
from agent.runtime.queues import DropOldestQueue
from agent.runtime.stage import Stage
from agent.tracking.tracker import Sighting, Tracker
from agent.vision.evidence import evidence_jpeg

log = logging.getLogger(__name__)

POLL_S = 0.1
LOOKED_STALE_S = 5.0   # no frame examined for this long (camera down, source ended): the wall clock ends passes


class PlateRecognizer(Protocol):
    def recognize(self, image: np.ndarray) -> Sequence[Any]:
        """Plate hits with .text, .confidence, .box (x, y, w, h) and .candidates."""


class ReadSink(Protocol):
    def accept(self, reads: Sequence[ReadEvent], now: float) -> None: ...


class ReadJournal(Protocol):
    def journal(self, reads: Sequence[ReadEvent]) -> None: ...


def put_waiting(q: "queue.Queue", item: Any, stage: "Stage") -> None:
    """Put on a bounded queue, waiting while it is full (back-pressure on the producer).
    The wait is bounded per try so a producer whose consumer died notices its own stop."""
    while True:
        try:
            q.put(item, timeout=POLL_S)
            return
        except queue.Full:
            if stage.fatal.is_set():
                raise RuntimeError(f"{stage.name}: downstream queue full and stage failing")


class CaptureStage(Stage):
    """Reads frames from the source at the configured rate; never waits for downstream."""

    name = "capture"

    def __init__(self, stop: threading.Event, open_source: Callable[[], FrameSource], fps: float,
                 frames: DropOldestQueue[Frame]):
        super().__init__(stop)
        self._open_source = open_source
        self._interval = 1.0 / fps
        self.frames = frames
        self.source_ended = threading.Event()
        self.frames_read = 0
        self.latest: Frame | None = None  # the newest frame, for the console's snapshot and camera test
        self._slot = SourceSlot()
        self._next_at = 0.0

    def should_finish(self) -> bool:
        return self.stop_requested.is_set() or self.source_ended.is_set()

    def step(self) -> None:
        if self._slot.source is None:
            self._slot.source = self._open_source()  # SourceError here → restart with backoff
        wait = self._next_at - time.monotonic()
        if wait > 0 and self.stop_requested.wait(wait):
            return
        self._next_at = max(self._next_at + self._interval, time.monotonic())
        try:
            frame = self._slot.source.read()
        except NoFrame:  # a live source between frames, or reconnecting: it logs its own state
            return
        except SourceEnded:
            log.info("source ended frames=%d", self.frames_read)
            self.source_ended.set()
            return
        except Exception:
            self._slot.close()  # reopen after the restart
            raise
        self.frames_read += 1
        self.latest = frame
        self.frames.put(frame)

    @property
    def corrupt_frames(self) -> int:
        return self._slot.corrupt_frames

    def source_status(self) -> dict:
        """The source's connection state and counters for the heartbeat ({} before it is opened)."""
        status = getattr(self._slot.source, "status", None)
        return status() if status is not None else {}

    def finish(self) -> None:
        self._slot.close()


class RecognizeStage(Stage):
    """Finds and reads plates in each frame; turns each into a Sighting for the tracker."""

    name = "recognize"

    def __init__(self, stop: threading.Event, upstream: CaptureStage, frames: DropOldestQueue[Frame],
                 recognizer: PlateRecognizer, accept_hit: Callable[[Any], bool],
                 sightings: "queue.Queue[Sighting]", weak_hit: Callable[[Any], bool] | None = None):
        super().__init__(stop, upstream)
        self.frames = frames
        self.recognizer = recognizer
        self.accept_hit = accept_hit  # the confidence cut (agent.vision.recognizer.is_confident)
        self.weak_hit = weak_hit      # below the cut, yet evidence for the tracker's vote
        self.sightings = sightings
        self.frames_done = 0
        self.failed_frames = 0
        self.looked_until: float | None = None   # captured_at of the last frame examined
        self._pending: Frame | None = None
        self._attempts = 0

    def idle(self) -> bool:
        return self._pending is None and self.frames.empty()

    def should_finish(self) -> bool:
        if self.upstream.finished.is_set() and self.stop_requested.is_set() and self._pending is None:
            discarded = self.frames.discard_all()  # frames are not reads: shutdown does not wait for them
            if discarded:
                log.info("frames discarded at shutdown count=%d", discarded)
        return super().should_finish()

    def step(self) -> None:
        if self._pending is None:
            try:
                self._pending = self.frames.get(timeout=POLL_S)
            except queue.Empty:
                return
            self._attempts = 0
        frame = self._pending
        self._attempts += 1
        if self._attempts > 2:  # the same frame crashed the recognizer twice: skip it, keep going
            log.error("frame skipped after repeated failures origin=%s index=%d", frame.origin, frame.index)
            self.failed_frames += 1
            self._pending = None
            return
        for sighting in frame_sightings(frame, self.recognizer, self.accept_hit, self.weak_hit):
            put_waiting(self.sightings, sighting, self)
        self.frames_done += 1
        self.looked_until = frame.captured_at
        self._pending = None


class TrackStage(Stage):
    """Feeds sightings to the tracker and passes on the read events it completes."""

    name = "track"

    def __init__(self, stop: threading.Event, upstream: RecognizeStage, sightings: "queue.Queue[Sighting]",
                 tracker: Tracker, reads: "queue.Queue[ReadEvent]", clock: Callable[[], float] = time.time,
                 journal: ReadJournal | None = None):
        super().__init__(stop, upstream)
        self.sightings = sightings
        self.tracker = tracker
        self.reads = reads
        self.clock = clock
        self.journal = journal
        self.reads_emitted = 0
        self._pending: Sighting | None = None
        self._unsent: list[ReadEvent] = []   # emitted by the tracker, not yet queued
        self.journal_failures = 0

    def idle(self) -> bool:
        return self._pending is None and not self._unsent and self.sightings.empty()

    def step(self) -> None:
        if self._unsent:
            self._emit([])          # queued only in part before (a stop came): go on first
            return
        if self._pending is None:
            try:
                self._pending = self.sightings.get(timeout=POLL_S)
            except queue.Empty:
                self._emit(self.tracker.flush(self._road_time()))
                return
        done = self.tracker.observe(self._pending)
        self._pending = None
        self._emit(done)

    def finish(self) -> None:
        self._emit(self.tracker.flush(self.clock(), force=True))

    def _road_time(self) -> float:
        """The time up to which the road has been looked at, for ending passes.

        A pass ends once frames later than its last sighting by the merge window have been
        examined, not when the wall clock says so: a stall upstream (a stage restarting, a
        starved core, a burst of slow frames) must not split one vehicle into two reads.
        When no frame has been examined for LOOKED_STALE_S (camera down), the wall clock
        takes over, so a read never waits for the camera to come back."""
        now = self.clock()
        looked = getattr(self.upstream, "looked_until", None)
        if looked is None or now - looked > LOOKED_STALE_S:
            return now
        return min(now, looked)

    def _emit(self, reads: list[ReadEvent]) -> None:
        """Journal the reads the tracker completed (durable), then queue them; kept in
        `_unsent` until queued. A journal write the disk refuses (full, I/O error) does not
        hold the reads back: they go on to the accept stage, whose own handling of a failing
        disk (hits kept and retried, the rest refused and audited) applies to them."""
        self._unsent.extend(reads)
        if not self._unsent:
            return
        if self.journal is not None:
            try:
                self.journal.journal(self._unsent)
            except OutboxError as exc:
                self.journal_failures += 1
                log.debug("reads not journaled count=%d reason=%s", len(self._unsent), exc)
        while self._unsent:
            put_waiting(self.reads, self._unsent[0], self)
            self._unsent.pop(0)
            self.reads_emitted += 1


class AcceptStage(Stage):
    """Hands reads to the outbox in durable batches (the outbox has agent.policy decide
    each: hotlist hits, per-destination decisions, projections)."""

    name = "accept"
    BATCH = 256
    RETRY_PAUSE_S = 1.0   # between offers of the hits a failing disk refused

    def __init__(self, stop: threading.Event, upstream: TrackStage, reads: "queue.Queue[ReadEvent]",
                 outbox: ReadSink, clock: Callable[[], float] = time.time):
        super().__init__(stop, upstream)
        self.reads = reads
        self.outbox = outbox
        self.clock = clock
        self.accepted = 0
        self.refused_full = 0
        self._pending: list[ReadEvent] = []
        self._gave_up = False   # stopping while the disk refuses the pending hits

    def idle(self) -> bool:
        return not self._pending and self.reads.empty()

    def should_finish(self) -> bool:
        return self._gave_up or super().should_finish()

    def unstored(self) -> tuple[int, int]:
        """(reads, hits among them) this stage still holds in memory, never stored: what a
        stop on a full disk loses (the pipeline reports it)."""
        reads = list(self._pending) + list(self.reads.queue)
        return len(reads), sum(1 for read in reads if read.is_hit)

    def step(self) -> None:
        if not self._pending:
            try:
                first = self.reads.get(timeout=POLL_S)
            except queue.Empty:
                return
            batch = [first]
            while len(batch) < self.BATCH:
                try:
                    batch.append(self.reads.get_nowait())
                except queue.Empty:
                    break
            self._pending = batch
        now = self.clock()
        batch = self._pending
        try:
            self.outbox.accept(batch, now)
        except OutboxFull as exc:
            self._after_refusal(batch, exc)
            return
        self.accepted += len(batch)
        self._pending = []

    def _after_refusal(self, batch: list[ReadEvent], exc: OutboxFull) -> None:
        """The outbox is full or its disk failed.

        At the size cap the outbox commits the batch except the non-hit reads it names in
        `exc.refused` (hits are never refused there). When the disk itself failed nothing was
        committed: non-hits are given up (counted, alarmed) and the hits stay pending here
        and are offered again after a pause, until the disk recovers.

        Logged at DEBUG only: the outbox reports the start of a full episode once (and, for
        a full disk, its end), and the counts go to the heartbeat, so a unit whose disk stays
        full does not write lines per read. On a stop request the pending hits are given
        up (the pipeline reports them as unstored) instead of blocking the shutdown.
        """
        refused = set(exc.refused)
        if not exc.hits_refused:
            self.refused_full += len(refused)
            self.accepted += len(batch) - len(refused)
            self._pending = []
            log.debug("reads refused outbox full count=%d reason=%s", len(refused), exc)
            return
        hits = [read for read in batch if read.read_id in exc.hit_ids]
        self.refused_full += len(batch) - len(hits)
        self._pending = hits
        log.debug("outbox write failed; keeping hits for retry hits=%d non_hits_refused=%d reason=%s",
                  len(hits), len(batch) - len(hits), exc)
        if self.stop_requested.wait(self.RETRY_PAUSE_S):
            self._gave_up = True


def frame_sightings(frame: Frame, recognizer: PlateRecognizer, accept_hit: Callable[[Any], bool],
                    weak_hit: Callable[[Any], bool] | None = None) -> list[Sighting]:
    """The plates of one frame that pass the cut (or, marked weak, the looser `weak_hit`), as the
    tracker's sightings (also used by tools/bench_passes.py: the benchmark measures this path)."""
    height, width = frame.image.shape[:2]
    out = []
    for hit in recognizer.recognize(frame.image):
        strong = accept_hit(hit)
        if not strong and not (weak_hit is not None and weak_hit(hit)):
            continue
        if _touches_edge(hit.box, width, height):
            continue  # a plate cut by the frame edge reads as a partial plate; wait for it whole
        out.append(_sighting(frame, hit, weak=not strong))
    return out


def _touches_edge(box: Any, width: int, height: int, margin: int = 2) -> bool:
    x, y, w, h = (int(v) for v in box)
    return x <= margin or y <= margin or x + w >= width - margin or y + h >= height - margin


def _sighting(frame: Frame, hit: Any, weak: bool = False) -> Sighting:
    x, y, w, h = (int(v) for v in hit.box)
    candidates = tuple(Candidate(text=c[0], confidence=float(c[1])) if isinstance(c, tuple)
                       else Candidate(text=c.text, confidence=float(c.confidence))
                       for c in (hit.candidates or ()))
    height, width = frame.image.shape[:2]
    return Sighting(
        text=hit.text, confidence=float(hit.confidence), seen_at=frame.captured_at, box=(x, y, w, h),
        candidates=candidates, plate_crop_jpeg=evidence_jpeg(frame.image, (x, y, w, h), 1.0),
        vehicle_jpeg=evidence_jpeg(frame.image, (x, y, w, h), 3.0),
        char_confidences=tuple(float(c) for c in getattr(hit, "char_confidences", None) or ()),
        frame_size=(width, height), weak=weak, fits_format=getattr(hit, "format", None) is not None,
        detection_score=getattr(hit, "detection_score", None),
    )
