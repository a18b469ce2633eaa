"""Motion gating on a mostly empty road: far fewer frames go to the recognizer, no pass is missed.

Real parts: a rendered road clip (sensor noise on every frame, so the picture is never still),
OpenCV decoding, the shipped models, the pass tracker; the agent's own frame path
(tools/bench_passes.run_clip).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.capture.gate import MotionGate, SceneRecognizer
from agent.capture.scene import RegionOfInterest
from agent.config.loader import parse_config
from agent.vision.recognizer import Recognizer
from tools.bench_passes import run_clip, score
from tools.synth.make_passes import make_passes

ROOT = Path(__file__).resolve().parents[1]


class Counting:
    def __init__(self):
        self.calls = 0

    def recognize(self, image):
        self.calls += 1
        return []


def test_sensor_noise_alone_does_not_open_the_gate_and_a_small_change_does():
    rng = np.random.default_rng(0)
    base = np.full((540, 960, 3), 90, np.uint8)
    gate = MotionGate(RegionOfInterest(), width=160, threshold=18, min_area=0.002)
    noisy = [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(10)]
    assert gate.moved(noisy[0])  # the first frame has nothing to compare with
    assert not any(gate.moved(frame) for frame in noisy[1:])
    car = noisy[-1].copy()
    car[300:360, 400:520] = 200  # a small vehicle-sized change
    assert gate.moved(car)


def test_motion_outside_the_region_of_interest_is_ignored():
    roi = RegionOfInterest([[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]])
    inner = Counting()
    scene = SceneRecognizer(inner, roi, MotionGate(roi), recheck_s=1.0, clock=lambda: 0.0)
    frame = np.full((540, 960, 3), 90, np.uint8)
    scene.recognize(frame)
    moved_above = frame.copy()
    moved_above[50:200, 100:400] = 250  # the sidewalk, above the region
    scene.recognize(moved_above)
    moved_inside = moved_above.copy()
    moved_inside[350:450, 100:400] = 250
    scene.recognize(moved_inside)
    assert (inner.calls, scene.frames_skipped) == (2, 1)


@pytest.mark.integration
def test_gating_cuts_recognition_on_an_empty_road_and_misses_no_pass(tmp_path):
    clip = tmp_path / "empty.mp4"
    truth = make_passes(clip, seed=21, count=3, width=640, height=360, gap_s=6.0, stop_share=0.0)
    recognizer = Recognizer.from_models(ROOT / "models")
    base = '[source]\npath = "x.mp4"\n'
    gated = score(run_clip(clip, parse_config(base), recognizer, truth["fps"]), truth)
    ungated = score(run_clip(clip, parse_config(base + "[scene]\nmotion_gate = false\n"), recognizer,
                             truth["fps"]), truth)
    assert ungated["frames_recognised"] == ungated["frames"]
    assert gated["frames_recognised"] < 0.6 * gated["frames"], gated
    for result in (gated, ungated):
        assert (result["events"], result["missed"], result["duplicates"]) == (3, 0, 0), result
