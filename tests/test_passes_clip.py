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
