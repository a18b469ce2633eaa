"""Motion-blur undoing for unsure reads (issue 20): the cepstrum finds a horizontal blur's
length, the Wiener filter brings back a readable plate, and a sharp plate is left alone."""
from __future__ import annotations

import sys
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


def _plate(text: str = "ABC1234", width: int = 144) -> np.ndarray:
    plate = render_plate(np.random.default_rng(4), text, "ABC-1234", "US", "us.LLL-DDDD")
    grey = cv2.cvtColor((plate.image * 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (width, 48), interpolation=cv2.INTER_AREA)


def test_the_cepstrum_finds_the_blur_length():
    sharp = _plate()
    for length in (6, 9, 14):
        x = to_model_input(blur(sharp, length))
        assert abs(deblur.motion_length(x) - length) <= 1, length


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
    plain = reader.read(smeared, "US", deblur_unsure=False)
    again = reader.read(smeared, "US")
    assert plain.text != "ABC1234"  # the cliff: 14 px on a 144 px plate
    assert again.text == "ABC1234" and again.confidence > 2 * plain.confidence


def test_a_sharp_plate_reads_the_same_either_way():
    reader = PlateReader.from_models(MODELS)
    sharp = _plate()
    assert reader.read(sharp, "US").text == reader.read(sharp, "US", deblur_unsure=False).text \
        == "ABC1234"
