"""Aiming snapshots and camera test figures, computed from a frame the pipeline already captured.

The console never opens the camera itself (a V4L2 device has one owner: the agent); it
asks the agent for its latest frame. Privacy masks are applied here as well as at
capture, so a snapshot can never show a masked area whichever build of the capture
stage produced the frame (blacking out an area twice changes nothing).
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

SNAPSHOT_WIDTH = 640
SNAPSHOT_QUALITY = 75   # 640-px aiming JPEGs of road scenes: 25-50 KB (docs/console.md has the figures)

Polygon = Sequence[Sequence[float]]


def privacy_masks(config: Any) -> tuple[Polygon, ...]:
    """The configured privacy-mask polygons (fractions of width and height), or none.

    Read by name from the config's `scene.privacy_masks` (the capture issue's schema) so this
    works whether or not the running build has that section.
    """
    scene = getattr(config, "scene", None)
    return tuple(getattr(scene, "privacy_masks", ()) or ())


def apply_masks(image: np.ndarray, masks: Sequence[Polygon]) -> np.ndarray:
    if not masks:
        return image
    out = image.copy()
    height, width = out.shape[:2]
    for polygon in masks:
        points = np.array([[round(x * width), round(y * height)] for x, y in polygon], np.int32)
        if len(points) >= 3:
            cv2.fillPoly(out, [points], (0, 0, 0))
    return out


def encode_snapshot(image: np.ndarray, masks: Sequence[Polygon] = (), width: int = SNAPSHOT_WIDTH,
                    quality: int = SNAPSHOT_QUALITY) -> bytes:
    """A JPEG at most `width` pixels wide, masks applied before scaling."""
    masked = apply_masks(image, masks)
    height, full_width = masked.shape[:2]
    if full_width > width:
        masked = cv2.resize(masked, (width, max(1, round(height * width / full_width))),
                            interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", masked, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("the frame could not be encoded as JPEG")
    return data.tobytes()


def focus_score(image: np.ndarray) -> float:
    """Variance of the Laplacian on the grey image: higher is sharper (compare while turning the lens)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def brightness(image: np.ndarray) -> float:
    """Mean grey level, 0-255 (about 90-160 reads best; near 0 or 255 means exposure is off)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return float(grey.mean())
