"""Render a short demo video of vehicles carrying synthetic plates past a camera.

    python tools/synth/make_clip.py --out demo.mp4 --seed 7

Writes ``OUT`` (MP4, 640x360, 10 fps, about 12 s) and ``OUT.json`` with the plate texts and
the frames each vehicle is in view. Deterministic for a seed and fast (a few seconds): the
vehicles are simple drawn shapes; the plates come from the same generator and format tables
as the OCR training data, drawn large enough to read (150-180 px wide).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.synth.render import render_plate  # noqa: E402
from tools.synth.text import choose_format, random_from_format  # noqa: E402

WIDTH, HEIGHT, FPS = 640, 360, 10


def _background(rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    sky = np.linspace(235, 170, 120).astype(np.uint8)
    img[:120] = np.stack([sky, sky - 20, sky - 60], axis=1)[:, None, :].clip(0, 255)
    img[120:] = (88, 90, 92)
    noise = rng.integers(-6, 7, size=(HEIGHT - 120, WIDTH, 1))
    img[120:] = np.clip(img[120:].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    cv2.rectangle(img, (0, 110), (WIDTH, 122), (120, 150, 120), -1)  # verge
    for x in range(0, WIDTH, 80):
        cv2.rectangle(img, (x, 338), (x + 40, 344), (230, 230, 230), -1)  # lane marks
    return img


def _vehicle(rng: np.random.Generator, plate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A rear view of a vehicle (BGR uint8) with the plate on it, and its shape mask."""
    w, h = int(rng.integers(300, 360)), int(rng.integers(220, 260))
    colour = tuple(int(c) for c in rng.integers(30, 230, 3))
    car = np.zeros((h, w, 3), np.uint8)
    car[:] = (88, 90, 92)
    cv2.rectangle(car, (10, 60), (w - 10, h - 30), colour, -1)  # body
    cv2.rectangle(car, (45, 10), (w - 45, 70), colour, -1)  # cabin
    cv2.rectangle(car, (60, 20), (w - 60, 62), (60, 50, 40), -1)  # rear window
    for x in (14, w - 44):
        cv2.rectangle(car, (x, 80), (x + 30, 100), (40, 40, 200), -1)  # lights
    for x in (25, w - 75):
        cv2.rectangle(car, (x, h - 35), (x + 50, h), (20, 20, 20), -1)  # tyres
    ph, pw = plate.shape[:2]
    x0, y0 = (w - pw) // 2, h - 45 - ph
    car[y0:y0 + ph, x0:x0 + pw] = plate
    mask = np.zeros((h, w), bool)
    mask[60:h - 30, 10:w - 10] = True
    mask[10:70, 45:w - 45] = True
    mask[h - 35:, 25:75] = True
    mask[h - 35:, w - 75:w - 25] = True
    return car, mask


def make_clip(out: Path, seed: int, vehicles: int = 5, seconds: float = 12.0) -> dict:
    """Write the clip and its sidecar; returns the sidecar content."""
    rng = np.random.default_rng([seed, 9001])
    frames = int(seconds * FPS)
    background = _background(rng)
    plan = []
    span = frames / vehicles
    for k in range(vehicles):
        region = "US" if rng.random() < 0.6 else ("BR" if rng.random() < 0.5 else "EU")
        fmt = choose_format(rng, region)
        while not fmt.strict:  # vanity plates are fine to read but make a poor demo list
            fmt = choose_format(rng, region)
        text, display = random_from_format(fmt, rng)
        plate = render_plate(rng, text, display, region, fmt.name).image
        pw = int(rng.integers(150, 181))
        ph = int(plate.shape[0] * pw / plate.shape[1])
        plate = cv2.resize((plate * 255).astype(np.uint8), (pw, ph),
                           interpolation=cv2.INTER_AREA)
        sprite, shape = _vehicle(rng, plate)
        start = int(k * span)
        duration = int(span * 1.4)
        plan.append({"text": text, "region": region, "format": fmt.name, "sprite": sprite, "mask": shape,
                     "start": start, "end": min(frames - 1, start + duration),
                     "direction": 1 if k % 2 == 0 else -1})
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a video writer for {out}")
    visible = {i: [] for i in range(len(plan))}
    try:
        for f in range(frames):
            frame = background.copy()
            for i, v in enumerate(plan):
                if not v["start"] <= f <= v["end"]:
                    continue
                sh, sw = v["sprite"].shape[:2]
                t = (f - v["start"]) / max(1, v["end"] - v["start"])
                travel = WIDTH + sw
                x = int(-sw + t * travel) if v["direction"] > 0 else int(WIDTH - t * travel)
                y = HEIGHT - sh - 10
                x0, x1 = max(0, x), min(WIDTH, x + sw)
                if x1 <= x0:
                    continue
                part = frame[y:y + sh, x0:x1]
                m = v["mask"][:, x0 - x:x1 - x]
                part[m] = v["sprite"][:, x0 - x:x1 - x][m]
                if x >= 0 and x + sw <= WIDTH:
                    visible[i].append(f)
            writer.write(frame)
    finally:
        writer.release()
    sidecar = {"video": out.name, "seed": seed, "fps": FPS, "width": WIDTH, "height": HEIGHT,
               "frames": frames,
               "plates": [{"text": v["text"], "region": v["region"], "format": v["format"],
                           "first_full_frame": visible[i][0] if visible[i] else None,
                           "last_full_frame": visible[i][-1] if visible[i] else None}
                          for i, v in enumerate(plan)]}
    Path(str(out) + ".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a demo clip of synthetic plates.")
    parser.add_argument("--out", type=Path, required=True, help="output video (.mp4)")
    parser.add_argument("--seed", type=int, default=0, help="seed (same seed, same clip)")
    parser.add_argument("--vehicles", type=int, default=5, help="number of vehicles (4-6)")
    parser.add_argument("--seconds", type=float, default=12.0, help="clip length in seconds")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    sidecar = make_clip(args.out, args.seed, args.vehicles, args.seconds)
    print(json.dumps({"video": str(args.out), "sidecar": str(args.out) + ".json",
                      "plates": [p["text"] for p in sidecar["plates"]],
                      "seconds": round(time.monotonic() - t0, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
