"""How a detected plate box becomes the OCR model's input.

Why this is its own module: the OCR model was trained on crops cut a particular way (the
plate's box plus a margin, squashed to a fixed grey image; see tools/synth/degrade.py and the
plate-text set: 10% margin at the sides, 15% above and below). The detector engineer's boxes,
the eval crops and the agent's frames all go through these two functions so the reader always
sees what it was trained on.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

OCR_INPUT_HEIGHT = 48
OCR_INPUT_WIDTH = 144
MARGIN_X = 0.10  # share of the box width added on each side
MARGIN_Y = 0.15  # share of the box height added above and below
# A detector box gets less: it already runs a little wide of the plate (on the detector-framed
# val of tools/framed_val.py its 90th percentile is 1.13x the plate's width and 1.23x its
# height), and the reader read 174 of 223 detected val plates with this margin against 166 with
# the plate-text one, with 7 wrong reads passing the cut instead of 10 (issue 20; chosen on
# training val and train scenes only, docs/ocr.md).
DETECTOR_MARGIN = (0.06, 0.09)


def crop_for_ocr(frame: np.ndarray, box: Sequence[float],
                 corners: Sequence[Sequence[float]] | None = None,
                 margin: tuple[float, float] = (MARGIN_X, MARGIN_Y)) -> np.ndarray:
    """Cut the plate at ``box`` = (x, y, w, h) out of ``frame`` (BGR or grey) with a margin
    (``margin`` = shares of the box width and height added on each side; the plate-text cut by
    default, DETECTOR_MARGIN for a detector's box).

    With ``corners`` (four (x, y) points: top-left, top-right, bottom-right, bottom-left) the
    plate is rectified to a fronto-parallel rectangle (with the same margin) instead, which
    undoes the camera's perspective. The result is clipped to the frame; an empty crop raises
    ValueError naming the box.
    """
    H, W = frame.shape[:2]
    if corners is not None:
        quad = np.asarray(corners, np.float32).reshape(4, 2)
        top = np.linalg.norm(quad[1] - quad[0])
        bottom = np.linalg.norm(quad[2] - quad[3])
        left = np.linalg.norm(quad[3] - quad[0])
        right = np.linalg.norm(quad[2] - quad[1])
        pw, ph = max(top, bottom), max(left, right)
        if pw >= 4 and ph >= 2:
            mx, my = pw * margin[0], ph * margin[1]
            out_w, out_h = int(round(pw + 2 * mx)), int(round(ph + 2 * my))
            dst = np.float32([[mx, my], [mx + pw, my], [mx + pw, my + ph], [mx, my + ph]])
            M = cv2.getPerspectiveTransform(quad, dst)
            return cv2.warpPerspective(frame, M, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE)
    x, y, w, h = (float(v) for v in box)
    mx, my = w * margin[0], h * margin[1]
    x0, y0 = int(max(0, np.floor(x - mx))), int(max(0, np.floor(y - my)))
    x1, y1 = int(min(W, np.ceil(x + w + mx))), int(min(H, np.ceil(y + h + my)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"plate box {tuple(box)} is empty inside a {W}x{H} frame")
    return frame[y0:y1, x0:x1]


def to_model_input(crop: np.ndarray) -> np.ndarray:
    """A crop (BGR, BGRA or grey uint8) as the OCR input: float32 [1, 1, H, W], 0..255 grey.

    The crop is squashed to the input size whatever its aspect ratio (training did the same);
    contrast normalisation happens inside the model.
    """
    if crop.ndim == 3 and crop.shape[2] == 4:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGRA2GRAY)
    elif crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    if crop.size == 0:
        raise ValueError("empty crop")
    h, w = crop.shape[:2]
    interp = cv2.INTER_AREA if (w > OCR_INPUT_WIDTH or h > OCR_INPUT_HEIGHT) else cv2.INTER_LINEAR
    grey = cv2.resize(crop, (OCR_INPUT_WIDTH, OCR_INPUT_HEIGHT), interpolation=interp)
    return grey.astype(np.float32)[None, None]
