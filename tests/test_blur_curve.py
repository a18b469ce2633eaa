"""The blur-curve tool (issue 20): shrinking never enlarges, the kernel smears along its
direction only, and the curve reads a rendered plate right when sharp."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.vision.ocr import PlateReader  # noqa: E402
from tools.blur_curve import blur, curve, shrink  # noqa: E402
from tools.synth.camera import motion_kernel  # noqa: E402
from tools.synth.render import render_plate  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_shrink_and_blur():
    img = np.zeros((40, 200), np.uint8)
    assert shrink(img, 90).shape == (18, 90)
    assert shrink(img, 400).shape == (40, 200)
    dot = np.zeros((21, 21), np.uint8)
    dot[10, 10] = 255
    smeared = blur(dot, 9)
    assert np.count_nonzero(smeared[10]) == 9 and np.count_nonzero(smeared[:10]) == 0
    assert np.array_equal(blur(dot, 0), dot)
    k = motion_kernel(12, 90.0)  # vertical: the column carries the weight
    assert abs(k.sum() - 1) < 1e-5 and k[:, 5:7].sum() > 0.9


def test_curve_reads_a_sharp_plate():
    plate = render_plate(np.random.default_rng(2), "ABC1234", "ABC-1234", "US", "us.LLL-DDDD")
    img = cv2.cvtColor((plate.image * 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
    rows = curve(PlateReader.from_models(MODELS), [(img, "ABC1234", "US")], 140, (0, 30))
    assert rows[0] == {"blur_px": 0, "top1": 1.0, "top5": 1.0}
    assert rows[1]["top1"] == 0.0  # 30 px of blur on a 140 px plate leaves nothing to read
