"""When the track stage ends a pass: by the frames examined, not by the wall clock.

A stall upstream (a stage restarting, a starved core) leaves the sightings queue empty
while the wall clock runs on. Ending passes by the wall clock then split one vehicle into
two reads (seen as a rare failure of the pipeline crash tests under load). The stage ends
a pass once frames later than its last sighting by the merge window have been examined;
only when no frame has been examined for LOOKED_STALE_S does the wall clock take over.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np

import agent.runtime.stages as stages
from agent.capture.frames import Frame
from agent.delivery.service import wait_until
from agent.runtime.queues import DropOldestQueue
from agent.runtime.stages import RecognizeStage, TrackStage
from agent.tracking.passes import PassTracker
from helpers.pipeline import PLATES, ScriptedRecognizer

TIMEOUT_S = 0.1


class Upstream:
    """A capture stage stand-in that runs until the test says it has finished."""

    def __init__(self) -> None:
        self.finished = threading.Event()


def frame(index: int, captured_at: float) -> Frame:
    image = np.full((120, 160, 3), 60, np.uint8)
    image[0, 0] = 0                                   # PLATES[0] in every frame
    return Frame(image=image, captured_at=captured_at, index=index, origin="test")


class Rig:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.source = Upstream()
        self.frames: DropOldestQueue = DropOldestQueue(16)
        sightings: queue.Queue = queue.Queue(maxsize=16)
        self.reads: queue.Queue = queue.Queue()
        self.recognize = RecognizeStage(self.stop, self.source, self.frames, ScriptedRecognizer(),
                                        lambda hit: True, sightings)
        self.tracker = PassTracker("cam-1", timeout_s=TIMEOUT_S, min_frames=1,
                                   stopped_timeout_s=TIMEOUT_S)
        self.flushed_at: list[float] = []
        flush = self.tracker.flush

        def recording_flush(now: float, force: bool = False):
            self.flushed_at.append(time.time())
            return flush(now, force)

        self.tracker.flush = recording_flush
        self.track = TrackStage(self.stop, self.recognize, sightings, self.tracker, self.reads)
        self.recognize.start()
        self.track.start()

    def examined(self, count: int) -> bool:
        return self.recognize.frames_done == count and self.track.idle()

    def idle_flush_after(self, moment: float) -> bool:
        return any(t > moment for t in self.flushed_at)

    def finish(self) -> list:
        self.source.finished.set()
        self.stop.set()
        assert self.track.join(10) and self.recognize.join(10)
        out = []
        while not self.reads.empty():
            out.append(self.reads.get_nowait())
        return out


def test_a_stall_upstream_does_not_split_a_pass():
    rig = Rig()
    start = time.time()
    for i in range(2):
        rig.frames.put(frame(i, start + 0.01 * i))
    assert wait_until(lambda: rig.examined(2), 10, 0.005)
    # The stall: no frame comes while the wall clock runs well past the merge window, and
    # the stage looks for ended passes meanwhile (the positive signal we wait for).
    assert wait_until(lambda: rig.idle_flush_after(start + 3 * TIMEOUT_S), 10, 0.01)
    assert rig.reads.empty() and rig.tracker.pending() == 1
    # The frames taken during the stall arrive: they belong to the same pass.
    for i in range(2, 4):
        rig.frames.put(frame(i, start + 0.01 * i))
    assert wait_until(lambda: rig.examined(4), 10, 0.005)
    reads = rig.finish()
    assert [(r.plate, r.frames) for r in reads] == [(PLATES[0], 4)]


def test_frames_examined_past_the_window_end_the_pass_before_the_stream_ends():
    rig = Rig()
    start = time.time()
    rig.frames.put(frame(0, start))
    assert wait_until(lambda: rig.examined(1), 10, 0.005)
    # An empty frame later than the window has been examined: the pass has ended.
    empty = frame(1, start + 2 * TIMEOUT_S)
    empty.image[0, 0] = 255                           # ScriptedRecognizer: no plate
    rig.frames.put(empty)
    got = rig.reads.get(timeout=10)
    assert (got.plate, got.frames) == (PLATES[0], 1)
    assert rig.finish() == []


def test_with_no_frame_examined_for_long_the_wall_clock_ends_the_pass(monkeypatch):
    monkeypatch.setattr(stages, "LOOKED_STALE_S", 0.2)
    rig = Rig()
    rig.frames.put(frame(0, time.time()))
    got = rig.reads.get(timeout=10)                   # no further frame: the camera is down
    assert (got.plate, got.frames) == (PLATES[0], 1)
    assert rig.finish() == []
