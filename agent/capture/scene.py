"""The parts of a frame that matter: privacy masks (never seen by anything) and the region of
interest (where plates are looked for). Polygons come from the config as fractions of the
frame's width and height, so they survive a change of camera resolution; pixel forms are
computed once per frame size."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

Polygon = Sequence[Sequence[float]]


def polygon_pixels(polygon: Polygon, width: int, height: int) -> np.ndarray:
    """The polygon in pixel coordinates, as the int32 (N, 1, 2) array OpenCV draws."""
    points = [(round(x * (width - 1)), round(y * (height - 1))) for x, y in polygon]
    return np.asarray(points, np.int32).reshape(-1, 1, 2)


class PrivacyMask:
    """Blacks out its polygons on every frame, in place, as the frame is captured."""

    def __init__(self, polygons: Sequence[Polygon]):
        self.polygons = tuple(polygons)
        self._pixels: dict[tuple[int, int], list[np.ndarray]] = {}

    def __bool__(self) -> bool:
        return bool(self.polygons)

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.polygons:
            height, width = image.shape[:2]
            pixels = self._pixels.get((width, height))
            if pixels is None:
                pixels = self._pixels[(width, height)] = [polygon_pixels(p, width, height)
                                                          for p in self.polygons]
            cv2.fillPoly(image, pixels, (0, 0, 0))
        return image


class RegionOfInterest:
    """Where plates are looked for; empty means the whole frame."""

    def __init__(self, polygon: Polygon = ()):
        self.polygon = tuple(tuple(p) for p in polygon)
        self._cache: dict[tuple[int, int], tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]] = {}

    def __bool__(self) -> bool:
        return bool(self.polygon)

    def geometry(self, width: int, height: int) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
        """(bounding rectangle x0, y0, x1, y1; polygon in pixels; 0/255 mask of the rectangle's size)."""
        key = (width, height)
        if key not in self._cache:
            if not self.polygon:
                pixels = polygon_pixels(((0, 0), (1, 0), (1, 1), (0, 1)), width, height)
            else:
                pixels = polygon_pixels(self.polygon, width, height)
            x, y, w, h = cv2.boundingRect(pixels)
            x1, y1 = min(width, x + w), min(height, y + h)
            mask = np.zeros((y1 - y, x1 - x), np.uint8)
            cv2.fillPoly(mask, [pixels - np.array([x, y], np.int32)], 255)
            self._cache[key] = ((x, y, x1, y1), pixels, mask)
        return self._cache[key]

    def contains(self, box: Sequence[int], width: int, height: int) -> bool:
        """Is the centre of box (x, y, w, h) inside the region?"""
        if not self.polygon:
            return True
        _, pixels, _ = self.geometry(width, height)
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        return cv2.pointPolygonTest(pixels, (float(cx), float(cy)), False) >= 0
