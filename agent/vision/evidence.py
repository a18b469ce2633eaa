"""The evidence images a read carries: the plate crop and the vehicle around it, as JPEG.

Cut from the frame the plate was read in; the policy decides per destination whether either
leaves the unit (fields `plate_crop`, `vehicle_image`).
"""
from __future__ import annotations

import cv2
import numpy as np


def evidence_jpeg(image: np.ndarray, box: tuple[int, int, int, int], grow: float) -> bytes | None:
    """JPEG (quality 85) of the region around `box` = (x, y, w, h), grown `grow` times (and,
    when grown, twice as much in height: the vehicle around its plate); None if empty."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    gw, gh = w * grow, h * grow * (2.0 if grow > 1 else 1.0)
    x0, y0 = max(0, int(cx - gw / 2)), max(0, int(cy - gh / 2))
    x1, y1 = min(image.shape[1], int(cx + gw / 2)), min(image.shape[0], int(cy + gh / 2))
    if x1 <= x0 or y1 <= y0:
        return None
    ok, data = cv2.imencode(".jpg", image[y0:y1, x0:x1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    return data.tobytes() if ok else None
