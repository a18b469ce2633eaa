"""Bounded queues after recognition, and no read lost between tracker and outbox (issue 15).

- A stuck consumer makes the tracker wait, then the recognizer, and frames drop at the
  frame queue (counted): memory stays bounded, no read is dropped.
- A read the tracker has emitted is journaled in the outbox before it leaves the tracker;
  one that dies with the process before the accept stage took it is accepted at the next
  start.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np

from agent.audit.records import expanded_records
from agent.capture.frames import Frame
from agent.delivery.service import wait_until
from agent.runtime.queues import DropOldestQueue
from agent.runtime.stages import RecognizeStage, TrackStage
from agent.tracking.passes import PassTracker
from helpers.pipeline import PLATES, ScriptedRecognizer
from helpers.soak import build_stack, make_read


class Upstream:
    """An upstream stage that runs until the test says it has finished."""

    def __init__(self) -> None:
        self.finished = threading.Event()


class Journal:
    def __init__(self) -> None:
        self.reads: list = []

    def journal(self, reads) -> None:
        self.reads.extend(reads)


def _frame(index: int, number: int) -> Frame:
    image = np.full((120, 160, 3), 60, np.uint8)
    image[0, 0] = number
    return Frame(image=image, captured_at=time.time() + index, index=index, origin="test")


def test_a_stuck_consumer_bounds_every_queue_and_drops_only_frames():
    stop = threading.Event()
    source = Upstream()
    frames: DropOldestQueue = DropOldestQueue(2)
    sightings: queue.Queue = queue.Queue(maxsize=1)
    reads: queue.Queue = queue.Queue(maxsize=1)
    recognize = RecognizeStage(stop, source, frames, ScriptedRecognizer(), lambda hit: True,
                               sightings)
    journal = Journal()
    tracker = PassTracker("cam-1", timeout_s=0.5, min_frames=1, stopped_timeout_s=0.5)
    track = TrackStage(stop, recognize, sightings, tracker, reads, journal=journal)
    recognize.start()
    track.start()
    try:
        # Each frame shows another plate a second later: every frame ends the last read.
        index = 0

        def push(count: int) -> None:
            nonlocal index
            for _ in range(count):
                frames.put(_frame(index, index % len(PLATES)))
                index += 1

        # Feed until the back-pressure has reached the recognizer: nobody takes reads, so
        # the read queue fills, the tracker waits on it, and the sightings queue fills.
        assert wait_until(lambda: push(1) or (reads.full() and sightings.full()), 20, 0.002)
        dropped = frames.dropped
        push(20)                                  # the recognizer is blocked: these drop
        assert frames.dropped >= dropped + 17
        assert sightings.qsize() <= 1 and reads.qsize() <= 1
        emitted_while_stuck = track.reads_emitted
        # Now drain: every read the tracker emitted (journaled first) arrives, none lost.
        source.finished.set()
        stop.set()
        got = []
        while not (track.finished.is_set() and reads.empty()):
            try:
                got.append(reads.get(timeout=0.1))
            except queue.Empty:
                pass
        assert track.join(10)
        assert len(got) == track.reads_emitted >= emitted_while_stuck >= 1
        assert [r.read_id for r in got] == [r.read_id for r in journal.reads]
    finally:
        stop.set()
        source.finished.set()
        recognize.join(5)
        track.join(5)


def test_a_journaled_read_survives_a_crash_before_its_acceptance(tmp_path):
    state = tmp_path / "unit"
    first = build_stack(state)
    now = time.time()
    accepted, emitted = make_read(1, now), make_read(2, now)
    first.outbox.journal([accepted, emitted])
    first.outbox.accept([accepted], now)       # the accept stage took the first one only
    assert [r.read_id for r in first.outbox.journaled()] == [emitted.read_id]
    # The process dies here; a new one starts on the same state.
    second = build_stack(state)
    try:
        assert second.outbox.journaled() == []
        assert second.outbox.read_ids() == {accepted.read_id, emitted.read_id}
        records = expanded_records(state / "audit.log", "read.accepted")
        assert [r["fields"]["read_id"] for r in records].count(emitted.read_id) == 1
    finally:
        second.outbox.close()
        second.audit.close()
