"""Render a road clip of vehicle passes with a ground-truth file: the tracker's test data.

    python tools/synth/make_passes.py --out runs/passes/day.mp4 --passes 60 --seed 1

Two lanes of vehicles (rear views carrying our generator's plates) cross the picture, the far
lane right to left, the near lane left to right, at speeds drawn per vehicle. Both lanes run
at once, so passes overlap in time (two plates in view together). Some vehicles stop in view
for a few seconds (stop-and-go), moving ones are motion-blurred (a horizontal blur as long as
the distance travelled during the exposure: 1/300 s by default; ALPR cameras usually run
1/500 s or shorter), and each clip has a lighting
variant: `day`, `dusk` (dark, low contrast, noisier) or `ir` (infrared night: a grey, dark
scene with the retroreflective plates bright). Every frame has sensor noise, so a motion
gate is tested against a picture that is never exactly still.

Writes OUT (MP4) and OUT.json: {"fps", "width", "height", "frames", "lighting", "passes": [
{"text", "region", "lane", "speed_px_s", "stop_s", "blur_px", "first_frame", "last_frame",
"first_full_frame", "last_full_frame"}]} (frames where any part / the whole plate is in view).
Deterministic for a seed. `--gap-s` spaces arrivals (a long gap makes a mostly empty road).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.synth.make_clip import _vehicle  # noqa: E402
from tools.synth.render import render_plate  # noqa: E402
from tools.synth.text import choose_format, random_from_format  # noqa: E402

BASE_WIDTH = 960  # sizes below are for a 960-wide frame and scale with --width
LIGHTING = ("day", "dusk", "ir")


@dataclass
class Pass:
    text: str
    region: str
    lane: int
    speed: float            # px per second (frame pixels)
    start_s: float          # when its front enters the picture
    stop_at: float | None   # x (of the sprite's left edge) where it stops, or None
    stop_s: float
    sprite: np.ndarray
    mask: np.ndarray
    plate_box: tuple[int, int, int, int]  # inside the sprite
    blur_px: int = 0
    blurred: np.ndarray | None = None   # the sprite as seen while moving
    frames: list[int] = field(default_factory=list)
    full_frames: list[int] = field(default_factory=list)

    def x_at(self, t: float, width: int) -> float | None:
        """Left edge of the sprite at clip time t (None before it enters)."""
        sw = self.sprite.shape[1]
        travel = t - self.start_s
        if travel < 0:
            return None
        distance = self.speed * travel
        if self.stop_at is not None:
            to_stop = self.stop_at + sw if self.lane == 1 else width - self.stop_at
            if distance > to_stop:
                distance = to_stop + max(0.0, self.speed * (travel - to_stop / self.speed - self.stop_s))
        return -sw + distance if self.lane == 1 else width - distance

    def end_s(self, width: int) -> float:
        sw = self.sprite.shape[1]
        return self.start_s + (width + sw) / self.speed + (self.stop_s if self.stop_at is not None else 0.0)


def _road(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    horizon = height // 4
    sky = np.linspace(235, 170, horizon).astype(np.int16)
    img[:horizon] = np.stack([sky, sky - 20, sky - 60], axis=1)[:, None, :].clip(0, 255).astype(np.uint8)
    img[horizon:] = (88, 90, 92)
    noise = rng.integers(-8, 9, size=(height - horizon, width, 1))
    img[horizon:] = np.clip(img[horizon:].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    cv2.rectangle(img, (0, horizon - 10), (width, horizon + 4), (110, 150, 110), -1)  # verge
    for x in range(0, width, width // 8):  # lane divider
        cv2.rectangle(img, (x, height * 3 // 5), (x + width // 16, height * 3 // 5 + 6), (225, 225, 225), -1)
    for k in range(6):  # houses and a sidewalk at the top: what privacy masks are for
        x = int(k * width / 6 + 10)
        cv2.rectangle(img, (x, horizon - 60), (x + width // 8, horizon - 10), (70, 80, 150), -1)
        cv2.rectangle(img, (x + 15, horizon - 45), (x + 45, horizon - 25), (200, 220, 240), -1)
    return img


def plan_passes(rng: np.random.Generator, count: int, width: int, height: int, gap_s: float,
                stop_share: float, exposure_s: float) -> list[Pass]:
    scale = width / BASE_WIDTH
    lane_free = [1.0, 1.0]  # clip time at which each lane can take the next vehicle
    passes = []
    for k in range(count):
        lane = int(rng.integers(0, 2))
        region = "US" if rng.random() < 0.6 else ("BR" if rng.random() < 0.5 else "EU")
        fmt = choose_format(rng, region)
        while not fmt.strict:
            fmt = choose_format(rng, region)
        text, display = random_from_format(fmt, rng)
        plate = render_plate(rng, text, display, region, fmt.name).image
        lane_scale = (0.85 if lane == 0 else 1.0) * scale
        pw = int(rng.integers(150, 190))
        ph = int(plate.shape[0] * pw / plate.shape[1])
        plate = cv2.resize((plate * 255).astype(np.uint8), (pw, ph), interpolation=cv2.INTER_AREA)
        sprite, mask = _vehicle(rng, plate)
        sh, sw = sprite.shape[:2]
        plate_box = ((sw - pw) // 2, sh - 45 - ph, pw, ph)
        if lane_scale != 1.0:  # the vehicle is drawn at the 960-wide size, then scaled as a whole
            size = (int(round(sw * lane_scale)), int(round(sh * lane_scale)))
            sprite = cv2.resize(sprite, size, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
            plate_box = tuple(int(round(v * lane_scale)) for v in plate_box)
        speed = float(rng.uniform(250, 900)) * scale
        stops = rng.random() < stop_share
        start = lane_free[lane] + float(rng.exponential(gap_s))
        p = Pass(text=text, region=region, lane=lane, speed=speed, start_s=start,
                 stop_at=float(rng.uniform(0.2, 0.6) * width) if stops else None,
                 stop_s=float(rng.uniform(2.0, 6.0)) if stops else 0.0,
                 sprite=sprite, mask=mask, plate_box=plate_box)
        if exposure_s > 0:
            p.blur_px = int(round(speed * exposure_s))  # the travel during the exposure
            if p.blur_px >= 2:
                kernel = np.ones((1, p.blur_px), np.float32) / p.blur_px
                p.blurred = cv2.filter2D(p.sprite, -1, kernel)
        lane_free[lane] = p.end_s(width) + 0.3
        passes.append(p)
    return passes


def make_passes(out: Path, seed: int, count: int = 60, width: int = 960, height: int = 540, fps: float = 10.0,
                lighting: str = "day", gap_s: float = 1.5, stop_share: float = 0.15,
                exposure_s: float = 1 / 300, tail_s: float = 2.0) -> dict:
    rng = np.random.default_rng([seed, 4242])
    road = _road(rng, width, height)
    passes = plan_passes(rng, count, width, height, gap_s, stop_share, exposure_s)
    frames = int((max(p.end_s(width) for p in passes) + tail_s) * fps)
    lane_y = {0: int(height * 0.58), 1: height - 8}
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a video writer for {out}")
    noise_rng = np.random.default_rng([seed, 77])
    try:
        for f in range(frames):
            t = f / fps
            frame = road.copy()
            plate_layer = np.zeros((height, width), bool)
            for i, p in enumerate(sorted(passes, key=lambda q: q.lane)):  # the near lane is drawn last
                x = p.x_at(t, width)
                if x is None:
                    continue
                previous = p.x_at(t - 1 / fps, width)
                sprite = p.blurred if p.blurred is not None and previous is not None and abs(x - previous) > 0.5 \
                    else p.sprite
                x = int(round(x))
                sh, sw = p.sprite.shape[:2]
                y = lane_y[p.lane] - sh
                x0, x1 = max(0, x), min(width, x + sw)
                if x1 <= x0:
                    continue
                part = frame[y:y + sh, x0:x1]
                m = p.mask[:, x0 - x:x1 - x]
                part[m] = sprite[:, x0 - x:x1 - x][m]
                bx, by, bw, bh = p.plate_box
                px0, px1 = max(0, x + bx), min(width, x + bx + bw)
                if px1 > px0:
                    p.frames.append(f)
                    plate_layer[y + by:y + by + bh, px0:px1] = True
                    if x + bx >= 0 and x + bx + bw <= width:
                        p.full_frames.append(f)
            frame = _light(frame, plate_layer, lighting, noise_rng)
            writer.write(frame)
    finally:
        writer.release()
    sidecar = {"video": out.name, "seed": seed, "fps": fps, "width": width, "height": height, "frames": frames,
               "lighting": lighting,
               "passes": [{"text": p.text, "region": p.region, "lane": p.lane, "speed_px_s": round(p.speed, 1),
                           "stop_s": round(p.stop_s, 2), "blur_px": p.blur_px,
                           "first_frame": p.frames[0] if p.frames else None,
                           "last_frame": p.frames[-1] if p.frames else None,
                           "first_full_frame": p.full_frames[0] if p.full_frames else None,
                           "last_full_frame": p.full_frames[-1] if p.full_frames else None}
                          for p in passes]}
    Path(str(out) + ".json").write_text(json.dumps(sidecar, indent=1) + "\n")
    return sidecar


def _light(frame: np.ndarray, plates: np.ndarray, lighting: str, rng: np.random.Generator) -> np.ndarray:
    """The lighting variant, then sensor noise."""
    img = frame.astype(np.float32)
    sigma = 2.0
    if lighting == "dusk":
        img = 25 + img * 0.5
        sigma = 4.0
    elif lighting == "ir":
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
        dark = 10 + grey * 0.3
        dark[plates] = np.clip(grey[plates] * 1.15 + 10, 0, 255)  # retroreflective plate under IR
        img = np.repeat(dark[:, :, None], 3, axis=2)
        sigma = 5.0
    img += rng.normal(0.0, sigma, size=img.shape[:2])[:, :, None].astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a road clip of vehicle passes with ground truth.")
    parser.add_argument("--out", type=Path, required=True, help="output video (.mp4); OUT.json is the truth")
    parser.add_argument("--seed", type=int, default=0, help="seed (same seed, same clip)")
    parser.add_argument("--passes", type=int, default=60, help="number of vehicles")
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--height", type=int, default=540)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--lighting", choices=LIGHTING, default="day")
    parser.add_argument("--gap-s", type=float, default=1.5, help="mean extra gap between vehicles of a lane")
    parser.add_argument("--stop-share", type=float, default=0.15, help="share of vehicles that stop in view")
    parser.add_argument("--exposure", type=float, default=1 / 300,
                        help="exposure in seconds for motion blur (default 1/300; 0: none)")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    sidecar = make_passes(args.out, args.seed, args.passes, args.width, args.height, args.fps, args.lighting,
                          args.gap_s, args.stop_share, args.exposure)
    print(json.dumps({"video": str(args.out), "truth": str(args.out) + ".json", "passes": len(sidecar["passes"]),
                      "frames": sidecar["frames"], "seconds": round(time.monotonic() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
