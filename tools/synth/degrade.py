"""Put a clean plate into a scene and degrade it the way roadside cameras do.

Order matters and follows the optics: geometry (perspective, rotation) first, then the lens
(defocus/motion blur) at the plate's real size on the sensor (40-200 px wide), then exposure,
sensor noise and JPEG. The crop around the plate copies how agent.vision.crops cuts a detected
box (a margin on every side, jittered) so training sees what the reader will see.
"""
from __future__ import annotations

import cv2
import numpy as np

from tools.synth.camera import RoadsideMix, ir_night, motion_kernel, roadside
from tools.synth.render import cv_colour


def _scene(rng: np.random.Generator, plate: np.ndarray, margin: float,
           clutter: bool = False) -> tuple[np.ndarray, tuple]:
    """The plate on a car body, with an optional plate frame; returns (scene, plate box).
    ``clutter`` adds lamps, grille slots and badges around it, which a loose crop takes in."""
    ph, pw = plate.shape[:2]
    mx, my = int(pw * margin) + 4, int(ph * margin * 1.6) + 4
    H, W = ph + 2 * my, pw + 2 * mx
    body = rng.uniform(0, 1, 3).astype(np.float32)
    scene = np.empty((H, W, 3), np.float32)
    scene[:] = body
    small = rng.uniform(-0.25, 0.25, size=(3, 4, 1)).astype(np.float32)
    scene += cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)[..., None]
    if rng.random() < 0.5:  # bumper line / grille edges near the plate
        for _ in range(int(rng.integers(1, 4))):
            y = int(rng.integers(0, H))
            cv2.line(scene, (0, y), (W, y + int(rng.integers(-5, 6))),
                     cv_colour(rng.uniform(0, 1, 3)), int(rng.integers(1, 6)))
    if clutter:
        for _ in range(int(rng.integers(1, 5))):
            cx, cy = int(rng.integers(0, W)), int(rng.integers(0, H))
            rw, rh = int(pw * rng.uniform(0.05, 0.5)), int(ph * rng.uniform(0.1, 0.6))
            cv2.rectangle(scene, (cx, cy), (cx + rw, cy + rh),
                          cv_colour(rng.uniform(0, 1, 3)), -1)
    x0, y0 = mx, my
    scene[y0:y0 + ph, x0:x0 + pw] = plate
    if rng.random() < 0.45:  # a dealer / chrome plate frame, often with text
        t = int(ph * rng.uniform(0.04, 0.12))
        col = cv_colour(rng.uniform(0, 0.25, 3) if rng.random() < 0.6
                        else rng.uniform(0.6, 0.95, 3))
        cv2.rectangle(scene, (x0 - t // 2, y0 - t // 2), (x0 + pw + t // 2, y0 + ph + t // 2),
                      col, t)
        if rng.random() < 0.5:
            tb = int(ph * rng.uniform(0.1, 0.16))
            cv2.rectangle(scene, (x0, y0 + ph - tb), (x0 + pw, y0 + ph + t // 2), col, -1)
    return np.clip(scene, 0, 1), (x0, y0, pw, ph)


# Share of crops cut tight to the characters (when the caller says where they are).
TIGHT_CROP_SHARE = 0.12
# Share of crops cut loose: the plate fills only part of the crop, the rest is bumper, plate
# frame and car body, as a hand-drawn box or a detector box around a close-up plate gives
# (in plate-text val, 4 of the 9 US plates misread by v1.4.0 are such crops).
LOOSE_CROP_SHARE = 0.12


def _warp(rng, scene, box, strength: float):
    """Random perspective + rotation about the plate; returns the warped scene and plate quad."""
    H, W = scene.shape[:2]
    x, y, w, h = box
    quad = np.float32([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    jitter = rng.normal(0, strength, size=(4, 2)).astype(np.float32) * np.float32([w, h])
    angle = np.deg2rad(rng.normal(0, 4 * strength / 0.05))
    c, s = np.cos(angle), np.sin(angle)
    centre = quad.mean(axis=0)
    rot = (quad - centre) @ np.float32([[c, s], [-s, c]]) + centre
    dst = rot + jitter
    M = cv2.getPerspectiveTransform(quad, dst.astype(np.float32))
    out = cv2.warpPerspective(scene, M, (W, H), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
    return out, dst


def _motion_kernel(rng, length: int) -> np.ndarray:
    return motion_kernel(length, float(rng.uniform(-30, 30)))


def degrade(rng: np.random.Generator, plate: np.ndarray, out_w: int, out_h: int,
            hard: float = 1.0, text_span: tuple[float, float] | None = None,
            roadside_mix: RoadsideMix | None = None) -> np.ndarray:
    """Camera-like grey crop (uint8, out_h x out_w) of a clean float BGR plate.

    ``hard`` scales how strong the degradations are (0 = clean, 1 = full range).
    ``text_span`` is where the serial starts and ends, as fractions of the plate's width: with
    it, some crops are cut tight to the characters, as a detector box that hugs the lettering
    (or a crop cut by someone else) gives, so the first and last characters touch the edge.
    A share of crops (LOOSE_CROP_SHARE) is cut loose instead, taking in the car around the plate.
    ``roadside_mix`` adds the roadside camera effects of tools/synth/camera.py (blur up to 12 px
    at any angle, rolling-shutter skew, IR night, low light) at the plate's sensor size; None
    (the default) draws exactly what earlier seeds drew.
    """
    loose = rng.random() < LOOSE_CROP_SHARE
    scene, box = _scene(rng, plate, margin=1.0 if loose else 0.3, clutter=loose)
    scene, quad = _warp(rng, scene, box, strength=0.045 * hard)
    # Crop as crops.crop_for_ocr does: the plate's bounding box plus a jittered margin
    # (plate-text: 10% sides, 15% top/bottom; detector boxes are looser or tighter).
    qx0, qy0 = quad.min(axis=0)
    qx1, qy1 = quad.max(axis=0)
    bw, bh = qx1 - qx0, qy1 - qy0
    if loose:  # the plate anywhere in a box up to twice its width and three times its height
        mx = rng.uniform(0.08, 0.5) * bw
        my = rng.uniform(0.3, 1.0) * bh
        sx = rng.uniform(-0.6, 0.6) * mx
        sy = rng.uniform(-0.6, 0.6) * my
    else:
        mx = rng.uniform(-0.03, 0.16) * bw
        my = rng.uniform(-0.03, 0.22) * bh
        sx = rng.normal(0, 0.025) * bw
        sy = rng.normal(0, 0.04) * bh
    H, W = scene.shape[:2]
    left, right = qx0 - mx + sx, qx1 + mx + sx
    if text_span is not None and not loose and rng.random() < TIGHT_CROP_SHARE:
        t0, t1 = qx0 + text_span[0] * bw, qx0 + text_span[1] * bw
        left = t0 - rng.uniform(-0.01, 0.05) * (t1 - t0)
        right = t1 + rng.uniform(-0.01, 0.05) * (t1 - t0)
    cx0 = int(np.clip(left, 0, W - 2))
    cy0 = int(np.clip(qy0 - my + sy, 0, H - 2))
    cx1 = int(np.clip(right, cx0 + 2, W))
    cy1 = int(np.clip(qy1 + my + sy, cy0 + 2, H))
    crop = scene[cy0:cy1, cx0:cx1]

    # Shadows and dirt on the plate before the camera sees it.
    ch, cw = crop.shape[:2]
    if rng.random() < 0.3 * hard:
        pts = rng.uniform(0, 1, size=(int(rng.integers(3, 6)), 2)) * [cw, ch]
        pts = np.vstack([pts, [[0, 0]] if rng.random() < 0.5 else [[cw, ch]]]).astype(np.int32)
        m = np.zeros((ch, cw), np.float32)
        cv2.fillPoly(m, [cv2.convexHull(pts)], 1.0)
        m = cv2.GaussianBlur(m, (0, 0), max(1.0, cw / 60))
        crop = crop * (1 - m[..., None] * rng.uniform(0.3, 0.7))
    if rng.random() < 0.25 * hard:
        dirt = cv2.resize(rng.uniform(0, 1, size=(int(rng.integers(4, 12)),
                                                  int(rng.integers(8, 24)))).astype(np.float32),
                          (cw, ch), interpolation=cv2.INTER_CUBIC)
        crop = crop * (1 - np.clip(dirt - 0.5, 0, 1)[..., None] * rng.uniform(0.3, 1.0))
    if rng.random() < 0.08 * hard:  # partial occlusion at an edge (tow hook, bike rack)
        ow = int(cw * rng.uniform(0.03, 0.1))
        ox = 0 if rng.random() < 0.5 else cw - ow
        crop = crop.copy()
        crop[:, ox:ox + ow] = rng.uniform(0, 0.5)

    # The plate's size on the sensor: 40-200 px wide (lower resolution = harder).
    target_w = int(np.exp(rng.uniform(np.log(40 + 40 * (1 - hard)), np.log(220))))
    target_h = max(8, int(round(ch * target_w / max(cw, 1))))
    small = cv2.resize(crop, (target_w, target_h), interpolation=cv2.INTER_AREA)
    pick = rng.random()
    if pick < 0.25 * hard:
        k = int(rng.integers(3, max(4, target_w // 18)))
        small = cv2.filter2D(small, -1, _motion_kernel(rng, k))
    elif pick < 0.55 * hard:
        small = cv2.GaussianBlur(small, (0, 0), rng.uniform(0.3, 1.3) * hard + 0.01)

    grey = cv2.cvtColor(np.clip(small, 0, 1).astype(np.float32), cv2.COLOR_BGR2GRAY)
    if roadside_mix is not None:
        grey = roadside(grey, rng, roadside_mix)
    elif rng.random() < 0.2 * hard:
        # Infrared night look: retro-reflective plate glows, everything else goes dark,
        # high contrast, a glare blob where the IR flash reflects.
        grey = ir_night(grey, rng)
    # Exposure and contrast.
    gamma = np.exp(rng.normal(0, 0.35 * hard))
    grey = np.clip(grey, 0, 1) ** gamma
    contrast = rng.uniform(1 - 0.6 * hard, 1.2)
    grey = (grey - 0.5) * contrast + 0.5 + rng.normal(0, 0.1 * hard)
    grey = grey + rng.normal(0, rng.uniform(0, 0.06) * hard, size=grey.shape)
    img = np.clip(grey * 255, 0, 255).astype(np.uint8)
    if rng.random() < 0.6 * hard:
        q = int(rng.integers(15, 85))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA if target_w > out_w
                      else cv2.INTER_LINEAR)
