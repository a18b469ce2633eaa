"""Generate synthetic plate crops: ``python -m tools.synth.generate --count N --seed S --out F``.

Writes an ``.npz`` with ``images`` (N x H x W uint8 grey, the OCR input size) and ``texts``,
and optionally a contact sheet PNG (``--sheet``) of samples for a human to look at.
Sample ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` so the set is deterministic
for a seed and can be generated in parallel chunks.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.vision.crops import OCR_INPUT_HEIGHT, OCR_INPUT_WIDTH  # noqa: E402
from tools.synth.degrade import degrade  # noqa: E402
from tools.synth.render import render_plate  # noqa: E402
from tools.synth.camera import RoadsideMix  # noqa: E402
from tools.synth.text import choose_format, random_from_format, random_generic  # noqa: E402

# Share of each region in the synthetic mix: US and BR are what the unit is measured on,
# EU/GB are most of our real training crops, AR and generic keep the reader general.
REGION_MIX = {"US": 0.42, "BR": 0.2, "EU": 0.14, "GB": 0.08, "AR": 0.06, "generic": 0.10}


@dataclass
class Sample:
    image: np.ndarray  # uint8 grey, OCR input size
    text: str
    region: str
    format_name: str


def make_sample(seed: int, index: int, width: int = OCR_INPUT_WIDTH,
                height: int = OCR_INPUT_HEIGHT, hard: float = 1.0,
                roadside: bool = False) -> Sample:
    """Sample ``index`` of the set ``seed`` (deterministic); ``roadside`` adds the roadside
    camera effects (tools/synth/camera.py: long blur at any angle, rolling shutter, IR night,
    low light)."""
    rng = np.random.default_rng([seed, index])
    regions = list(REGION_MIX)
    region = regions[int(rng.choice(len(regions), p=np.array(list(REGION_MIX.values()))))]
    if region == "generic":
        text, display = random_generic(rng)
        fmt_name = ""
    else:
        fmt = choose_format(rng, region)
        text, display = random_from_format(fmt, rng)
        fmt_name = fmt.name
    plate = render_plate(rng, text, display, region, fmt_name)
    tx, _, tw, _ = plate.text_box
    pw = plate.image.shape[1]
    image = degrade(rng, plate.image, width, height, hard=hard * float(rng.uniform(0.3, 1.0)),
                    text_span=(tx / pw, (tx + tw) / pw),
                    roadside_mix=RoadsideMix() if roadside else None)
    return Sample(image, text, region, fmt_name)


def _chunk(args: tuple[int, int, int, int, int, bool]) -> tuple[np.ndarray, list[str]]:
    seed, start, stop, width, height, roadside = args
    cv2.setNumThreads(1)
    imgs = np.empty((stop - start, height, width), np.uint8)
    texts = []
    for k, i in enumerate(range(start, stop)):
        s = make_sample(seed, i, width, height, roadside=roadside)
        imgs[k] = s.image
        texts.append(s.text)
    return imgs, texts


def generate(count: int, seed: int, workers: int = 1, width: int = OCR_INPUT_WIDTH,
             height: int = OCR_INPUT_HEIGHT, start: int = 0,
             roadside: bool = False) -> tuple[np.ndarray, list[str]]:
    """Samples ``start .. start+count-1`` of ``seed``; identical for any ``workers``."""
    step = 500
    jobs = [(seed, a, min(a + step, start + count), width, height, roadside)
            for a in range(start, start + count, step)]
    if workers <= 1:
        parts = [_chunk(j) for j in jobs]
    else:
        with Pool(workers) as pool:
            parts = pool.map(_chunk, jobs)
    images = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, height, width),
                                                                           np.uint8)
    texts = [t for p in parts for t in p[1]]
    return images, texts


def contact_sheet(images: np.ndarray, texts: list[str], cols: int = 8,
                  scale: int = 2) -> np.ndarray:
    """A grid of samples, each with its label underneath (BGR uint8)."""
    n = len(images)
    h, w = images.shape[1:3]
    th, tw = h * scale + 16, w * scale
    rows = (n + cols - 1) // cols
    sheet = np.full((rows * th, cols * tw, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        tile = cv2.resize(images[i], (tw, h * scale), interpolation=cv2.INTER_NEAREST)
        sheet[r * th:r * th + h * scale, c * tw:(c + 1) * tw] = tile[..., None]
        cv2.putText(sheet, texts[i], (c * tw + 4, r * th + h * scale + 13),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 200), 1, cv2.LINE_AA)
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64, help="number of samples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the set")
    parser.add_argument("--start", type=int, default=0, help="index of the first sample")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--roadside", action="store_true",
                        help="add the roadside camera effects (blur up to 12 px at any angle, "
                             "rolling shutter, IR night, low light; tools/synth/camera.py)")
    parser.add_argument("--out", type=Path, help="write images and texts to this .npz")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG of the samples")
    parser.add_argument("--sheet-count", type=int, default=64,
                        help="how many samples go on the contact sheet")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    images, texts = generate(args.count, args.seed, args.workers, start=args.start,
                             roadside=args.roadside)
    elapsed = time.monotonic() - t0
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.out, images=images, texts=np.array(texts))
    if args.sheet:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        k = min(args.sheet_count, len(images))
        cv2.imwrite(str(args.sheet), contact_sheet(images[:k], texts[:k]))
    print(json.dumps({"count": len(texts), "seed": args.seed, "start": args.start,
                      "seconds": round(elapsed, 2),
                      "per_minute": round(len(texts) / max(elapsed, 1e-9) * 60)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
