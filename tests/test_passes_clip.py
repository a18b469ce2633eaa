"""One read event per vehicle pass on a rendered road clip: the agent's frame path end to end.

Real parts: tools/synth/make_passes.py (two lanes in opposite directions, so plates are in view
together; a vehicle that stops in view; motion blur; sensor noise), OpenCV decoding, the shipped
models, the motion gate and the pass tracker (tools/bench_passes.run_clip, the benchmark's path).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.loader import parse_config
from agent.vision.recognizer import Recognizer
from tools.bench_passes import run_clip, score
from tools.synth.make_passes import make_passes
from tools.synth.make_real_clip import DATASETS, make_plate_free_clip, make_real_clip

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def test_every_pass_is_one_event_with_the_voted_text(tmp_path):
    clip = tmp_path / "road.mp4"
    truth = make_passes(clip, seed=31, count=10, width=640, height=360, gap_s=0.5, stop_share=0.3)
    overlapping = sum(1 for i, p in enumerate(truth["passes"]) if any(
        j != i and q["first_frame"] <= p["last_frame"] and q["last_frame"] >= p["first_frame"]
        for j, q in enumerate(truth["passes"])))
    assert overlapping >= 2 and any(p["stop_s"] > 0 for p in truth["passes"])  # the clip is a fair test
    result = score(run_clip(clip, parse_config('[source]\npath = "x.mp4"\n'), Recognizer.from_models(ROOT / "models"),
                            truth["fps"]), truth)
    assert (result["events"], result["missed"], result["duplicates"], result["spurious"]) == (10, 0, 0, 0), result
    assert result["correct_vote"] >= 9, result["wrong"]


@pytest.mark.skipif(not DATASETS.joinpath("plate-text").is_dir(), reason="../shared/datasets is not present")
def test_a_plate_never_read_above_the_cut_is_still_one_event_when_the_detector_follows_it(tmp_path):
    """Regression (issue 16): the vanity plate SUSRESC, framed by painted lettering (JESUS RESCUED
    ME), was read differently in every frame and never above the cut, so its pass had no event."""
    clip = tmp_path / "real.mp4"
    texts = frozenset({"SUSRESC", "OV14VLL", "AAT5827"})
    truth = make_real_clip(clip, seed=1, count=3, only=texts)
    result = score(run_clip(clip, parse_config('[source]\npath = "x.mp4"\n'), Recognizer.from_models(ROOT / "models"),
                            truth["fps"]), truth)
    assert (result["events"], result["missed"], result["duplicates"], result["spurious"]) == (3, 0, 0, 0), result
    assert result["by_evidence"]["detection"] == 1, result


@pytest.mark.skipif(not DATASETS.joinpath("plate-text").is_dir(), reason="../shared/datasets is not present")
def test_plate_free_views_crossing_the_picture_give_no_event(tmp_path):
    clip = tmp_path / "plate_free.mp4"
    truth = make_plate_free_clip(clip, seed=1, count=25)
    result = score(run_clip(clip, parse_config('[source]\npath = "x.mp4"\n'), Recognizer.from_models(ROOT / "models"),
                            truth["fps"]), truth)
    assert (result["events"], result["spurious"]) == (0, 0), result["spurious_events"]
