"""Roadside camera effects on a grey plate image at its size on the sensor (issue 20).

Why its own module: the generator (tools/synth/degrade.py) and the trainer's augmentation of
the real crops (tools/train_ocr.py) must apply the same effects, or the model learns blur on
synthetic plates only and still fails on a real blurred one. Every function takes and returns
a float32 grey image in 0..1 at the plate's sensor size (40-220 px wide), so lengths are in
sensor pixels, the unit the blur curve (tools/blur_curve.py) measures in.

- linear motion blur up to 12 px at any angle (most near horizontal: cars cross the frame);
- rolling-shutter skew: rows exposed one after another shear a moving plate sideways;
- IR night: retro-reflective plate bright, the rest dark, high contrast, a glare blob;
- low light: few photons, so shot noise and read noise, then the camera's gain lifts both.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.vision.deblur import line_kernel

MAX_BLUR_PX = 12

motion_kernel = line_kernel  # one line for the synthetic camera and the reader's deblurring


@dataclass(frozen=True)
class RoadsideMix:
    """How often each effect is drawn (each independently)."""

    blur: float = 0.45
    skew: float = 0.2
    ir_night: float = 0.12
    low_light: float = 0.15


def linear_blur(grey: np.ndarray, rng: np.random.Generator, max_px: int = MAX_BLUR_PX
                ) -> np.ndarray:
    """Motion blur 2..``max_px`` px long; 70% within 20 degrees of horizontal, else any angle.
    The length is capped where no reader could follow: a seventh of the crop's width along
    the rows (12 px from an 84 px plate on), a third of its height for steep angles."""
    h, w = grey.shape[:2]
    angle = rng.uniform(-20, 20) if rng.random() < 0.7 else rng.uniform(-90, 90)
    cap = max(2, min(max_px, w // 7 if abs(angle) <= 45 else h // 3))
    length = int(rng.integers(2, cap + 1))
    return cv2.filter2D(grey, -1, motion_kernel(length, float(angle)),
                        borderType=cv2.BORDER_REPLICATE)


def rolling_shutter(grey: np.ndarray, rng: np.random.Generator, max_shear: float = 0.3
                    ) -> np.ndarray:
    """Shear rows sideways by up to ``max_shear`` px per row (top and bottom rows exposed at
    different times while the plate moves)."""
    h, w = grey.shape[:2]
    k = float(rng.uniform(-max_shear, max_shear))
    M = np.float32([[1, k, -k * h / 2], [0, 1, 0]])
    return cv2.warpAffine(grey, M, (w, h), borderMode=cv2.BORDER_REPLICATE)


def ir_night(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Infrared night look: the plate glows, everything darker goes black, maybe a glare."""
    g = np.clip((grey - rng.uniform(0.2, 0.45)) * rng.uniform(2.0, 3.5), 0, 1)
    if rng.random() < 0.5:
        gh, gw = g.shape
        yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
        cx, cy = rng.uniform(0, gw), rng.uniform(0, gh)
        r = rng.uniform(0.1, 0.4) * gw
        g = np.clip(g + np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) * 0.6, 0, 1)
    return g.astype(np.float32)


def low_light(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dusk or an unlit street: 40-400 photons at full white (shot noise), read noise, then a
    gain back to a usable level, which lifts the noise with the signal."""
    photons = float(np.exp(rng.uniform(np.log(40), np.log(400))))
    signal = rng.poisson(np.clip(grey, 0, 1) * photons).astype(np.float32)
    signal += rng.normal(0, rng.uniform(0.5, 3.0), grey.shape).astype(np.float32)
    out = signal / photons * rng.uniform(0.6, 1.0)  # the gain rarely restores full white
    return np.clip(out, 0, 1).astype(np.float32)


def roadside(grey: np.ndarray, rng: np.random.Generator, mix: RoadsideMix = RoadsideMix()
             ) -> np.ndarray:
    """The effects in the order the light meets them: motion (blur, skew), then the sensor
    (IR or low light; not both)."""
    grey = grey.astype(np.float32)
    if rng.random() < mix.skew:
        grey = rolling_shutter(grey, rng)
    if rng.random() < mix.blur:
        grey = linear_blur(grey, rng)
    pick = rng.random()
    if pick < mix.ir_night:
        grey = ir_night(grey, rng)
    elif pick < mix.ir_night + mix.low_light:
        grey = low_light(grey, rng)
    return np.clip(grey, 0, 1).astype(np.float32)


def roadside_crop(img: np.ndarray, rng: np.random.Generator, mix: RoadsideMix = RoadsideMix(),
                  max_width: int = 220) -> np.ndarray:
    """The roadside effects on a real uint8 grey crop (the trainer's augmentation): the crop is
    brought to a sensor width of 60-220 px (never enlarged), given the effects there, and
    returned at its own size, so a 12 px blur means 12 px at a roadside plate's size."""
    h, w = img.shape[:2]
    tw = int(rng.uniform(min(60, w), min(w, max_width)))
    th = max(8, int(round(h * tw / w)))
    small = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    out = roadside(small, rng, mix)
    return cv2.resize(np.clip(out * 255, 0, 255).astype(np.uint8), (w, h),
                      interpolation=cv2.INTER_LINEAR)
