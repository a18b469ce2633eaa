"""Synthetic street scenes with and without a plate, for detector and install tests."""
from __future__ import annotations

import cv2
import numpy as np


def draw_plate(width: int, text: str = "AB 123 CD") -> np.ndarray:
    """A plain EU-style plate (white, black border and letters) drawn with OpenCV, BGR."""
    height = max(10, int(round(width / 4.5)))
    big_w, big_h = 520, 115
    plate = np.full((big_h, big_w, 3), 235, np.uint8)
    plate[:, :40] = (160, 50, 20)  # blue country strip
    cv2.rectangle(plate, (1, 1), (big_w - 2, big_h - 2), (20, 20, 20), 4)
    cv2.putText(plate, text, (55, 88), cv2.FONT_HERSHEY_SIMPLEX, 2.6, (15, 15, 15), 9, cv2.LINE_AA)
    return cv2.resize(plate, (width, height), interpolation=cv2.INTER_AREA)


def street_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A plate-free street-like background: sky/road gradient, a car-like body, some noise."""
    rng = np.random.default_rng(seed)
    grad = np.linspace(200, 70, height, dtype=np.float32)[:, None, None]
    scene = np.repeat(np.repeat(grad, width, axis=1), 3, axis=2)
    scene += rng.normal(0, 6, size=scene.shape).astype(np.float32)
    return np.clip(scene, 0, 255).astype(np.uint8)


def scene_with_plate(height: int, width: int, plate_w: int, cx: int, cy: int,
                     seed: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A scene with a dark car body and one plate centred at (cx, cy); returns (frame, box)."""
    frame = street_scene(height, width, seed)
    car_w, car_h = int(plate_w * 4.2), int(plate_w * 2.2)
    x0, y0 = max(0, cx - car_w // 2), max(0, cy - int(car_h * 0.7))
    cv2.rectangle(frame, (x0, y0), (min(width - 1, x0 + car_w), min(height - 1, y0 + car_h)),
                  (60, 40, 120), -1)
    plate = draw_plate(plate_w)
    ph, pw = plate.shape[:2]
    px, py = cx - pw // 2, cy - ph // 2
    frame[py:py + ph, px:px + pw] = plate
    return frame, (px, py, pw, ph)
