"""The pass tracker: one voted read event per vehicle pass (agent.tracking.passes, .vote)."""
from __future__ import annotations

from agent.reads import Candidate
from agent.tracking.passes import PassTracker, direction
from agent.tracking.tracker import Sighting
from agent.tracking.vote import Reading, align, vote


def sighting(text: str, at: float, conf: float = 0.9, candidates=(), box=(100, 100, 100, 30),
             chars=(), size=None) -> Sighting:
    return Sighting(text=text, confidence=conf, seen_at=at, box=box, candidates=tuple(candidates),
                    char_confidences=tuple(chars), frame_size=size)


def test_same_plate_over_frames_is_one_read_with_first_and_last_seen():
    tracker = PassTracker("cam-1", timeout_s=2.0)
    for i, conf in enumerate([0.6, 0.95, 0.7]):
        assert tracker.observe(sighting("ABC1234", 100 + i * 0.1, conf)) == []
    [read] = tracker.flush(now=110)
    assert (read.plate, read.seen_at, read.last_seen, read.frames) == ("ABC1234", 100, 100.2, 3)
    assert read.camera_id == "cam-1" and read.candidates[0].text == "ABC1234"


def test_the_vote_beats_the_single_most_confident_frame():
    """Three frames read ABC1234; one frame reads ABC1Z34 more confidently: the vote wins."""
    tracker = PassTracker("cam-1")
    for i, (text, conf) in enumerate([("ABC1234", 0.8), ("ABC1Z34", 0.97), ("ABC1234", 0.8), ("ABC1234", 0.75)]):
        tracker.observe(sighting(text, 1 + i * 0.1, conf, box=(100 + 10 * i, 100, 100, 30)))
    [read] = tracker.flush(now=0, force=True)
    assert read.plate == "ABC1234" and read.frames == 4
    assert [c.text for c in read.candidates][:2] == ["ABC1234", "ABC1Z34"]
    assert 0 < read.confidence < 1 and len(read.candidates) <= 5


def test_each_character_is_decided_by_its_own_majority():
    """No frame is right everywhere, yet every character is right in most frames."""
    readings = [Reading("XBC1234", 0.9), Reading("AXC1234", 0.9), Reading("ABX1234", 0.9),
                Reading("ABC1234", 0.5)]
    assert vote(readings).text == "ABC1234"


def test_reads_of_different_lengths_are_aligned_not_shifted():
    assert align("ABC1234", "AC1234") == [0, None, 1, 2, 3, 4, 5]
    readings = [Reading("ABC1234", 0.8), Reading("AC1234", 0.9), Reading("ABC12344", 0.6),
                Reading("ABC1284", 0.7), Reading("ABC1234", 0.7)]
    assert vote(readings).text == "ABC1234"


def test_char_confidences_weigh_the_vote():
    readings = [Reading("ABC1234", 0.9, (0.9, 0.9, 0.9, 0.9, 0.3, 0.9, 0.9)),
                Reading("ABC1Z34", 0.9, (0.9, 0.9, 0.9, 0.9, 0.99, 0.9, 0.9))]
    assert vote(readings).text == "ABC1Z34"


def test_a_plate_half_in_view_does_not_win_over_the_whole_plate():
    tracker = PassTracker("cam-1")
    frames = [("HMA066", 0.97), ("HMA066", 0.97), ("HMA066", 0.97), ("6HMA066", 0.93), ("6HMA066", 0.93),
              ("6HNA066", 0.60)]
    for i, (text, conf) in enumerate(frames):
        tracker.observe(sighting(text, 1 + i * 0.1, conf, box=(100 + 5 * i, 100, 100, 30)))
    [read] = tracker.flush(now=0, force=True)
    assert (read.plate, read.frames) == ("6HMA066", 6)


def test_two_vehicles_in_view_at_once_are_two_events_even_with_near_identical_plates():
    tracker = PassTracker("cam-1")
    for i in range(8):
        t = 1 + i * 0.1
        tracker.observe(sighting("FLT1001", t, box=(100 + 20 * i, 300, 120, 40)))
        tracker.observe(sighting("FLT1002", t, box=(900 - 20 * i, 310, 120, 40)))
    reads = tracker.flush(now=0, force=True)
    assert sorted(r.plate for r in reads) == ["FLT1001", "FLT1002"]
    assert {r.plate: r.direction for r in reads} == {"FLT1001": "right", "FLT1002": "left"}


def test_a_vehicle_stopped_for_a_minute_is_one_event():
    """Stopped at a light: the motion gate re-reads it once a second; the track must not end."""
    tracker = PassTracker("cam-1", timeout_s=3.0)
    emitted = []
    for i in range(10):  # drives in
        emitted += tracker.observe(sighting("STOP123", i * 0.1, box=(100, 100 + 10 * i, 100, 30), size=(640, 480)))
    for s in range(61):  # stands still
        emitted += tracker.observe(sighting("STOP123", 1 + s, box=(100, 190, 100, 30), size=(640, 480)))
    for i in range(10):  # drives off
        emitted += tracker.observe(sighting("STOP123", 62 + i * 0.1, box=(100, 190 + 10 * i, 100, 30),
                                            size=(640, 480)))
    emitted += tracker.flush(now=100)
    assert [(r.plate, r.frames) for r in emitted] == [("STOP123", 81)]


def test_gap_longer_than_timeout_makes_two_reads_and_emits_the_first_on_next_sighting():
    tracker = PassTracker("cam-1", timeout_s=1.0)
    tracker.observe(sighting("XYZ999", 1.0))
    emitted = tracker.observe(sighting("XYZ999", 5.0))
    assert [r.seen_at for r in emitted] == [1.0]
    assert [r.seen_at for r in tracker.flush(now=0, force=True)] == [5.0]


def test_a_plate_that_left_the_frame_ends_its_track_before_the_timeout():
    tracker = PassTracker("cam-1", timeout_s=10.0)
    for i in range(5):  # moving right at 500 px/s, last seen near the right edge
        tracker.observe(sighting("GONE42", i * 0.1, box=(300 + 50 * i, 200, 100, 30), size=(640, 480)))
    assert tracker.flush(now=0.45) == []
    assert [r.plate for r in tracker.flush(now=0.8)] == ["GONE42"]


def test_max_duration_ends_a_track():
    tracker = PassTracker("cam-1", timeout_s=5.0, max_track_s=10.0)
    emitted = []
    for s in range(25):
        emitted += tracker.observe(sighting("PARK001", float(s)))
    assert [r.frames for r in emitted] == [10, 10]


def test_min_frames_suppresses_single_frame_glitches():
    tracker = PassTracker("cam-1", min_frames=2)
    tracker.observe(sighting("GLITCH1", 1.0, box=(500, 100, 100, 30)))
    tracker.observe(sighting("REAL123", 1.0))
    tracker.observe(sighting("REAL123", 1.2))
    assert [r.plate for r in tracker.flush(now=0, force=True)] == ["REAL123"]


def test_a_misread_frame_joins_the_track_through_its_candidates():
    tracker = PassTracker("cam-1")
    tracker.observe(sighting("ABC1234", 1.0))
    tracker.observe(sighting("AXYZ234", 1.1, 0.5, [Candidate("AXYZ234", 0.5), Candidate("ABC1234", 0.4)]))
    tracker.observe(sighting("ABC1234", 1.2))
    assert [(r.plate, r.frames) for r in tracker.flush(now=30)] == [("ABC1234", 3)]


def test_different_plates_one_after_another_in_the_same_spot_stay_apart():
    tracker = PassTracker("cam-1", timeout_s=5.0)
    for i, text in enumerate(["ABC1234", "XYZ9876", "ABC1234", "KLM5555"]):
        tracker.observe(sighting(text, 1.0 + i * 0.1))
    assert sorted(r.plate for r in tracker.flush(now=0, force=True)) == ["ABC1234", "KLM5555", "XYZ9876"]


def test_each_read_gets_a_unique_id():
    tracker = PassTracker("cam-1", timeout_s=0.5, stopped_timeout_s=0.5)
    reads = []
    for i in range(50):
        reads += tracker.observe(sighting(f"P{i:04d}", float(i)))
    reads += tracker.flush(now=0, force=True)
    assert len({r.read_id for r in reads}) == 50


def test_direction_names():
    assert direction((0, 0, 100, 30), (0, 300, 100, 30)) == "down"
    assert direction((0, 0, 100, 30), (0, 0, 140, 42)) == "approaching"
    assert direction((0, 0, 100, 30), (0, 0, 100, 30)) == "stationary"


def test_a_vehicle_braking_near_the_bottom_edge_is_not_taken_for_one_that_left():
    """Regression: a plate riding near the bottom edge that stopped while moving right was ended
    as 'left the frame' (its predicted centre passed the right edge) and came back as a second pass."""
    tracker = PassTracker("cam-1", timeout_s=3.0)
    emitted = []
    for i in range(8):
        emitted += tracker.observe(sighting("8918LZ", i * 0.1, box=(50 + 50 * i, 385, 170, 101), size=(960, 540)))
    for k in range(1, 4):  # stopped; the motion gate re-reads it about once a second
        emitted += tracker.flush(0.7 + k * 0.5)
        emitted += tracker.observe(sighting("8918LZ", 0.7 + k * 1.0, box=(400, 385, 170, 101), size=(960, 540)))
    emitted += tracker.flush(now=20)
    assert [(r.plate, r.frames) for r in emitted] == [("8918LZ", 11)]


def test_a_pass_seen_only_in_weak_reads_counts_when_enough_frames_agree():
    tracker = PassTracker("cam-1", agreeing_frames=4, min_confidence=0.7)
    for i, conf in enumerate([0.2, 0.3, 0.25, 0.4, 0.35]):
        tracker.observe(Sighting("1PZX581", conf, i * 0.1, (100 + 20 * i, 300, 150, 80), weak=True))
    for i, conf in enumerate([0.5, 0.6]):  # another pass, two weak frames only: not enough
        tracker.observe(Sighting("ZZZ9999", conf, i * 0.1, (700, 100, 150, 80), weak=True))
    reads = tracker.flush(now=0, force=True)
    assert [r.plate for r in reads] == ["1PZX581"] and tracker.tracks_dropped == 1


def test_weak_reads_vote_but_one_strong_read_is_enough_to_count():
    tracker = PassTracker("cam-1")
    tracker.observe(Sighting("ABC1234", 0.9, 0.0, (100, 300, 150, 80)))
    tracker.observe(Sighting("ABC1234", 0.3, 0.1, (120, 300, 150, 80), weak=True))
    assert [(r.plate, r.frames) for r in tracker.flush(now=0, force=True)] == [("ABC1234", 2)]


def test_a_last_glimpse_after_the_plate_left_is_not_a_second_pass():
    """Regression: 'GLW' read once as GLW5U09 left the picture became its own event."""
    tracker = PassTracker("cam-1", timeout_s=3.0)
    emitted = []
    for i in range(5):
        emitted += tracker.observe(sighting("GLW5U09", i * 0.1, box=(500 + 80 * i, 200, 100, 30), size=(960, 540)))
    emitted += tracker.flush(0.75)
    assert [r.plate for r in emitted] == ["GLW5U09"]
    emitted += tracker.observe(sighting("GLW", 0.8, box=(880, 200, 60, 30), size=(960, 540)))
    emitted += tracker.flush(now=10)
    assert [r.plate for r in emitted] == ["GLW5U09"] and tracker.late_sightings == 1


def test_a_long_track_keeps_crops_only_on_its_best_sightings():
    tracker = PassTracker("cam-1", timeout_s=5.0, max_track_s=1000)
    for i in range(500):
        conf = 0.99 if i == 250 else 0.8
        tracker.observe(Sighting("PARK001", conf, i * 0.5, (100, 100, 100, 30),
                                 plate_crop_jpeg=b"crop%d" % i, vehicle_jpeg=b"car%d" % i))
    track = tracker._tracks[0]
    assert sum(1 for s in track.sightings if s.plate_crop_jpeg is not None) == 0
    [read] = tracker.flush(now=0, force=True)
    assert (read.frames, read.plate_crop_jpeg, read.vehicle_jpeg) == (500, b"crop250", b"car250")


def test_weak_reads_need_a_plate_format_and_the_detector_to_agree():
    from types import SimpleNamespace

    from agent.tracking.passes import weak_read

    def hit(text="1PZX581", conf=0.3, fmt="us.DLLLDDD", score=0.75):
        return SimpleNamespace(text=text, confidence=conf, format=fmt, detection_score=score)

    assert weak_read(hit(), 0.1, 0.6)
    assert not weak_read(hit(conf=0.05), 0.1, 0.6)
    assert not weak_read(hit(fmt=None), 0.1, 0.6)          # sign lettering fits no plate format
    assert not weak_read(hit(score=0.52), 0.1, 0.6)        # nor does the detector think it a plate
    assert weak_read(hit(score=None), 0.1, 0.6)            # a crop read without the detector
    # a read that fits no format counts only for the detection rule, at its detector score
    assert weak_read(hit(fmt=None, score=0.75), 0.1, 0.6, formatless_min_score=0.7)
    assert not weak_read(hit(fmt=None, score=0.65), 0.1, 0.6, formatless_min_score=0.7)
    assert not weak_read(hit(fmt=None, score=None), 0.1, 0.6, formatless_min_score=0.7)


# The detection rule (issue 16: a vanity plate framed by painted lettering, JESUS RESCUED ME
# around SUSRESC, was read differently in every frame and never above the cut: no event at all).
GARBLED = ["SUSRESCED", "JSUSRESCU", "SUSRESC6", "JSUSRESCUED", "SUSRESCU", "JSUSRESC", "SUSRESCE"]


def _unsure_pass(tracker: PassTracker, score: float = 0.8, step_px: int = 60, texts=GARBLED, fits_format=False):
    for i, text in enumerate(texts):
        tracker.observe(Sighting(text, 0.2, i * 0.1, (100 + step_px * i, 250, 230, 100), weak=True,
                                 fits_format=fits_format, detection_score=score, frame_size=(960, 540)))
    return tracker.flush(now=100, force=True)


def test_a_plate_the_detector_follows_across_the_picture_is_a_read_even_when_no_text_is_sure():
    tracker = PassTracker("cam-1", detected_frames=6, detected_min_score=0.7)
    [read] = _unsure_pass(tracker)
    assert read.evidence == "detection" and read.frames == len(GARBLED) and read.confidence < 0.7
    assert tracker.accepted_by == {"frame": 0, "agreement": 0, "detection": 1} and tracker.tracks_dropped == 0


def test_the_detection_rule_needs_enough_detected_frames_a_plate_that_travels_and_can_be_off():
    assert _unsure_pass(PassTracker("cam-1", detected_frames=6, detected_min_score=0.7), score=0.65) == []
    assert _unsure_pass(PassTracker("cam-1", detected_frames=8, detected_min_score=0.7)) == []
    # lettering on a wall (or a parked van) stays where it is: not a vehicle passing
    assert _unsure_pass(PassTracker("cam-1", detected_frames=6, detected_min_score=0.7), step_px=2) == []
    tracker = PassTracker("cam-1", detected_frames=0)
    assert _unsure_pass(tracker) == [] and tracker.tracks_dropped == 1


def test_reads_that_fit_no_format_vote_only_where_nothing_better_was_read():
    tracker = PassTracker("cam-1", detected_frames=6, detected_min_score=0.7)
    for i in range(8):
        fits = i % 2 == 0
        tracker.observe(Sighting("SUSRESC" if fits else "JSUSRESCUE", 0.3 if fits else 0.4, i * 0.1,
                                 (100 + 60 * i, 250, 230, 100), weak=True, fits_format=fits, detection_score=0.8))
    [read] = tracker.flush(now=100, force=True)
    assert read.plate == "SUSRESC" and read.frames == 8


def test_a_read_above_the_cut_or_agreeing_frames_say_so_in_evidence():
    tracker = PassTracker("cam-1", detected_frames=6, detected_min_score=0.7)
    tracker.observe(Sighting("ABC1234", 0.9, 0.0, (100, 300, 150, 80)))
    for i, conf in enumerate([0.2, 0.3, 0.25, 0.4, 0.35]):
        tracker.observe(Sighting("1PZX581", conf, i * 0.1, (600 - 20 * i, 100, 150, 80), weak=True))
    assert sorted((r.plate, r.evidence) for r in tracker.flush(now=0, force=True)) == [
        ("1PZX581", "agreement"), ("ABC1234", "frame")]


def test_a_stopped_vehicle_whose_plate_the_detector_loses_for_a_while_stays_one_pass():
    """Regression: a stopped far-lane car's grey plate went undetected for 3.5 s and its pass split in two."""
    tracker = PassTracker("cam-1", timeout_s=3.0)
    emitted = []
    for i in range(3):
        emitted += tracker.observe(sighting("LQB3276", i * 0.1, box=(400 + 5 * i, 230, 140, 44), size=(960, 540)))
    for t in (1.0, 2.0, 3.0, 4.0):
        emitted += tracker.flush(t)
    for i in range(5):  # seen again 3.5 s later, driving off
        emitted += tracker.observe(sighting("LQB3276", 3.7 + i * 0.1, box=(410 - 40 * i, 231, 140, 44),
                                            size=(960, 540)))
    emitted += tracker.flush(now=30)
    assert [(r.plate, r.frames) for r in emitted] == [("LQB3276", 8)]


def test_a_moving_plate_that_vanishes_mid_picture_ends_after_the_plain_timeout():
    tracker = PassTracker("cam-1", timeout_s=1.0)
    for i in range(5):
        tracker.observe(sighting("MOV1234", i * 0.1, box=(100 + 30 * i, 200, 100, 30), size=(960, 540)))
    assert tracker.flush(1.3) == []
    assert [r.plate for r in tracker.flush(1.5)] == ["MOV1234"]
