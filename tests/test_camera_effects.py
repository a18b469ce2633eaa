"""Roadside camera effects (issue 20) for the generator and the trainer's real crops: each
effect does what it says, and without them every earlier seed draws the same samples."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.synth import camera  # noqa: E402
from tools.synth import generate as gen  # noqa: E402


def _bars(h: int = 30, w: int = 120) -> np.ndarray:
    img = np.ones((h, w), np.float32)
    img[:, ::8] = 0.0  # thin dark vertical strokes
    return img


def test_blur_smears_strokes_and_keeps_brightness():
    rng = np.random.default_rng(0)
    img = _bars()
    out = camera.linear_blur(img, rng)
    assert out.shape == img.shape
    assert out.min() > img.min()  # the dark strokes are smeared out
    assert abs(out.mean() - img.mean()) < 0.02


def test_blur_length_is_capped_by_the_plate_size():
    """On a 40 px crop no blur is longer than 40 // 7 = 5 px along the rows."""
    for seed in range(50):
        rng = np.random.default_rng(seed)
        dot = np.zeros((15, 40), np.float32)
        dot[7, 20] = 1.0
        out = camera.linear_blur(dot, rng)
        assert np.count_nonzero(out > 1e-6) <= 5 * 5


def test_rolling_shutter_shears_rows():
    rng = np.random.default_rng(3)
    img = np.zeros((40, 100), np.float32)
    img[:, 50] = 1.0  # one vertical line
    out = camera.rolling_shutter(img, rng, max_shear=0.5)
    top, bottom = np.argmax(out[2]), np.argmax(out[-3])
    assert top != bottom  # the line leans


def test_low_light_is_noisy_and_ir_night_is_high_contrast():
    rng = np.random.default_rng(1)
    flat = np.full((30, 120), 0.6, np.float32)
    assert camera.low_light(flat, rng).std() > 0.02
    ramp = np.linspace(0, 1, 120, dtype=np.float32)[None].repeat(30, 0)
    darkest = [np.percentile(camera.ir_night(ramp, np.random.default_rng(s)), 10)
               for s in range(20)]
    assert np.median(darkest) < 0.05  # the dark part goes black (unless a glare lands there)


def test_roadside_crop_keeps_the_crop_size():
    rng = np.random.default_rng(2)
    img = (_bars(60, 200) * 255).astype(np.uint8)
    out = camera.roadside_crop(img, rng)
    assert out.shape == img.shape and out.dtype == np.uint8


def test_roadside_samples_differ_and_are_deterministic():
    a = gen.make_sample(7, 3, roadside=True)
    b = gen.make_sample(7, 3, roadside=True)
    assert np.array_equal(a.image, b.image)
    plain = gen.make_sample(7, 3)
    assert plain.text == a.text  # the text is drawn before the camera
