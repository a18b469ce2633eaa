"""Motion-blur undoing (issue 20): the cepstrum finds a horizontal blur's length and tells a
blurred plate from a sharp one, the Wiener filter brings back a readable plate, an unsure or
blurred plate is read again, and a sharp plate is left alone."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.vision import deblur  # noqa: E402
from agent.vision.crops import to_model_input  # noqa: E402
from agent.vision.ocr import PlateReader  # noqa: E402
from tools.blur_curve import blur  # noqa: E402
from tools.synth.render import render_plate  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"


def _plate(text: str = "ABC1234", width: int = 144, seed: int = 4) -> np.ndarray:
    plate = render_plate(np.random.default_rng(seed), text, "ABC-1234", "US", "us.LLL-DDDD")
    grey = cv2.cvtColor((plate.image * 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (width, 48), interpolation=cv2.INTER_AREA)


def test_the_cepstrum_finds_the_blur_length():
    sharp = _plate()
    for length in (6, 9, 14):
        x = to_model_input(blur(sharp, length))
        assert abs(deblur.estimate(x).length - length) <= 1, length


def test_a_blur_is_seen_on_a_blurred_plate_and_not_on_a_sharp_one():
    rule = deblur.DeblurRule()
    sharp = _plate(seed=1)
    assert not rule.seen(deblur.estimate(to_model_input(sharp)))
    for length in (8, 10, 12):
        found = deblur.estimate(to_model_input(blur(sharp, length)))
        assert rule.seen(found) and abs(found.length - length) <= 1, (length, found)
    # A deep valley at the character pitch of a sharp plate is the lettering, not a blur.
    assert not rule.seen(deblur.MotionBlur(length=21, depth=1.0))


def test_wiener_undoes_a_known_blur():
    sharp = to_model_input(_plate())
    blurred = to_model_input(blur(_plate(), 12))
    restored = deblur.wiener(blurred, 12)
    assert restored.shape == sharp.shape and restored.dtype == np.float32
    err_before = np.abs(blurred - sharp).mean()
    assert np.abs(restored - sharp).mean() < 0.8 * err_before


def test_an_unsure_blurred_plate_is_read_again_deblurred():
    reader = PlateReader.from_models(MODELS)
    smeared = blur(_plate(), 14)
    plain = reader.read(smeared, "US", undo_blur=False)
    again = reader.read(smeared, "US")
    assert plain.text != "ABC1234"  # the cliff: 14 px on a 144 px plate
    assert again.text == "ABC1234" and again.confidence > 2 * plain.confidence


def test_a_sharp_plate_reads_the_same_either_way():
    reader = PlateReader.from_models(MODELS)
    sharp = _plate()
    assert reader.read(sharp, "US").text == reader.read(sharp, "US", undo_blur=False).text \
        == "ABC1234"


def test_a_sure_wrong_read_of_a_blurred_plate_is_replaced():
    """The case the seen-blur rule is for: 9 px of blur turn a 3 into a 5 with enough
    confidence to pass the default cut (0.7 with a format), so an unsure-only second reading
    (which needs twice the confidence) would keep the wrong plate."""
    reader = PlateReader.from_models(MODELS)
    smeared = blur(_plate(seed=0), 9)
    plain = reader.read(smeared, "US", undo_blur=False)
    again = reader.read(smeared, "US")
    assert plain.text == "ABC1254" and plain.confidence >= 0.7 and plain.format
    assert again.text == "ABC1234" and again.format


def test_degenerate_crops_give_a_finite_estimate_and_a_reading():
    """Blank, tiny and noise crops (a detector box on a wall, a corrupt frame) must not turn
    the blur estimate into NaN or stop the reader."""
    reader = PlateReader.from_models(MODELS)
    rng = np.random.default_rng(0)
    for crop in (np.zeros((30, 90), np.uint8), np.full((1, 1), 255, np.uint8),
                 rng.integers(0, 256, (30, 90), dtype=np.uint8)):
        found = deblur.estimate(to_model_input(crop))
        assert deblur.MIN_LENGTH <= found.length < deblur.MAX_LENGTH
        assert np.isfinite(found.depth)
        assert reader.read(crop).confidence < 0.7  # nothing there passes the cut


def test_the_2d_cepstrum_finds_a_tilted_blur_and_the_filter_undoes_it():
    sharp = _plate(seed=3)
    found = deblur.estimate_tilted(to_model_input(blur(sharp, 14, 20)))
    assert abs(found.length - 14) <= 1 and abs(found.angle - 20) <= 4, found
    assert abs(deblur.estimate_tilted(to_model_input(blur(sharp, 14, -15))).angle + 15) <= 4
    clean, smeared = to_model_input(sharp), to_model_input(blur(sharp, 14, 20))
    restored = deblur.wiener_tilted(smeared, found)
    assert restored.shape == clean.shape and restored.dtype == np.float32
    assert np.abs(restored - clean).mean() < 0.8 * np.abs(smeared - clean).mean()


def test_a_tilted_blur_is_undone_only_by_the_tilted_stage():
    reader = PlateReader.from_models(MODELS)
    smeared = blur(_plate(seed=3), 14, 20)
    assert reader.read(smeared, "US").text == "ABC1234"
    reader.deblur_rule = replace(reader.deblur_rule, tilted_min_angle=float("inf"))
    assert reader.read(smeared, "US").text != "ABC1234"  # the horizontal stage alone fails


def test_the_synthetic_camera_blurs_with_the_readers_line():
    from tools.synth.camera import motion_kernel
    assert motion_kernel is deblur.line_kernel
    for angle in (0, 20, 90):
        assert abs(deblur.line_kernel(9, angle).sum() - 1) < 1e-5


def test_the_row_filter_is_the_2d_filter_at_angle_zero():
    """``wiener`` is the fast path of ``wiener_tilted`` for a horizontal blur: same result."""
    x = to_model_input(blur(_plate(), 10))
    for length in (5, 10, 14):
        fast = deblur.wiener(x, length)
        general = deblur.wiener_tilted(x, deblur.TiltedBlur(length, 0.0))
        assert np.abs(fast - general).max() < 0.01
