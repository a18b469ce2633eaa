"""The window tracker turns sightings across frames into one read per vehicle."""
from __future__ import annotations

from agent.reads import Candidate
from agent.tracking.tracker import Sighting, WindowTracker


def sighting(text: str, at: float, conf: float = 0.9, candidates=(), box=(0, 0, 100, 30)) -> Sighting:
    return Sighting(text=text, confidence=conf, seen_at=at, box=box, candidates=tuple(candidates))


def test_same_plate_over_frames_is_one_read_with_first_seen_time_and_best_confidence():
    tracker = WindowTracker("cam-1", merge_window_s=2.0)
    for i, conf in enumerate([0.6, 0.95, 0.7]):
        assert tracker.observe(sighting("ABC1234", 100 + i * 0.1, conf)) == []
    [read] = tracker.flush(now=110)
    assert (read.plate, read.seen_at, read.confidence, read.frames) == ("ABC1234", 100, 0.95, 3)
    assert read.camera_id == "cam-1"


def test_a_misread_frame_joins_the_track_through_its_candidates():
    tracker = WindowTracker("cam-1", merge_window_s=2.0)
    tracker.observe(sighting("ABC1234", 1.0))
    tracker.observe(sighting("ABC1Z34", 1.1, 0.5, [Candidate("ABC1Z34", 0.5), Candidate("ABC1234", 0.4)]))
    assert [r.plate for r in tracker.flush(now=10)] == ["ABC1234"]


def test_gap_longer_than_window_makes_two_reads_and_emits_the_first_on_next_sighting():
    tracker = WindowTracker("cam-1", merge_window_s=1.0)
    tracker.observe(sighting("XYZ999", 1.0))
    emitted = tracker.observe(sighting("XYZ999", 5.0))
    assert [r.seen_at for r in emitted] == [1.0]
    assert [r.seen_at for r in tracker.flush(now=0, force=True)] == [5.0]


def test_min_frames_suppresses_single_frame_glitches():
    tracker = WindowTracker("cam-1", merge_window_s=1.0, min_frames=2)
    tracker.observe(sighting("GLITCH1", 1.0))
    tracker.observe(sighting("REAL123", 1.0))
    tracker.observe(sighting("REAL123", 1.2))
    assert [r.plate for r in tracker.flush(now=0, force=True)] == ["REAL123"]


def test_each_read_gets_a_unique_id():
    tracker = WindowTracker("cam-1", merge_window_s=0.5)
    reads = []
    for i in range(50):
        reads += tracker.observe(sighting(f"P{i:04d}", float(i)))
    reads += tracker.flush(now=0, force=True)
    ids = {r.read_id for r in reads}
    assert len(ids) == 50


def test_partial_plate_entering_the_frame_merges_and_the_whole_plate_wins():
    tracker = WindowTracker("cam-1", merge_window_s=1.0)
    tracker.observe(sighting("HMA066", 1.0, 0.97))
    tracker.observe(sighting("6HMA066", 1.1, 0.93))
    tracker.observe(sighting("6HMA06", 1.2, 0.99))
    tracker.observe(sighting("6HNA066", 1.3, 0.60))   # one misread character
    [read] = tracker.flush(now=0, force=True)
    assert (read.plate, read.frames) == ("6HMA066", 4)


def test_different_plates_in_the_same_window_stay_apart():
    tracker = WindowTracker("cam-1", merge_window_s=5.0)
    for i, text in enumerate(["ABC1234", "XYZ9876", "ABC1234", "KLM5555"]):
        tracker.observe(sighting(text, 1.0 + i * 0.1))
    assert sorted(r.plate for r in tracker.flush(now=0, force=True)) == ["ABC1234", "KLM5555", "XYZ9876"]


def test_sequential_plates_side_by_side_are_two_reads():
    """Fleet cars with plates one character apart, in different lanes, must not merge."""
    tracker = WindowTracker("cam-1", merge_window_s=2.0)
    for i in range(3):
        tracker.observe(sighting("FLT1001", 1 + i * 0.1, box=(100, 300, 120, 40)))
        tracker.observe(sighting("FLT1002", 1 + i * 0.1, box=(900, 310, 120, 40)))
    assert sorted(r.plate for r in tracker.flush(now=0, force=True)) == ["FLT1001", "FLT1002"]
