"""Synthetic detector training scenes: our rendered plates placed in the TRAINING sets' photos.

Why: the real training scenes are mostly UK/EU/US plates from Open Images, Romanian dashcam
frames and US close-ups; Brazilian grey plates, Mercosur plates and many EU layouts are rare or
absent. Pasting our own rendered plates (tools/synth/render.py, owned by the OCR work) into real
scenes adds plate variety while keeping real backgrounds, vehicles and camera noise. Plates go
where plates really are: over a labelled real plate (same position and size, so the perspective
and scale are plausible, the plate style chosen by the box's aspect), and sometimes one more in
the lower part of a labelled vehicle box or elsewhere in the scene. Each pasted plate is warped
with a small random perspective, brightness-matched to the spot it covers, blurred to the
scene's sharpness and given sensor noise.

Only `split == "train"` images are used, so the training sets' val splits stay clean for model
selection; eval-* sets are never read. Sample ``i`` is drawn from ``default_rng([seed, i])``.

Usage:
    .venv/bin/python tools/synth_composite.py --count 1500 --out runs/synth_det
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.synth.render import (US_SLOGANS, US_STATES, font_sets, paint,  # noqa: E402
                                render_plate, text_mask)
from tools.synth.text import choose_format, random_from_format  # noqa: E402

log = logging.getLogger("synth_composite")

DATASETS_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"
TRAINING_SETS = ("open-images-plates", "ro-dashcam", "us-roboflow", "kaggle-plates")


def load_scenes(datasets_dir: Path) -> list[dict]:
    """Train-split rows of the training sets, with the dataset folder attached."""
    rows = []
    for name in TRAINING_SETS:
        with open(datasets_dir / name / "labels.jsonl", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if row["split"] == "train":
                    row["_folder"] = str(datasets_dir / name)
                    rows.append(row)
    return rows


def region_for_aspect(aspect: float, rng: np.random.Generator) -> str:
    """A plate style that fits a box of this width/height ratio (long EU, mid BR, short US)."""
    if aspect >= 3.6:
        return str(rng.choice(["EU", "GB", "BR"], p=[0.5, 0.25, 0.25]))
    if aspect >= 2.6:
        return str(rng.choice(["BR", "EU", "US"], p=[0.6, 0.2, 0.2]))
    return str(rng.choice(["US", "BR"], p=[0.75, 0.25]))


def rendered_plate(rng: np.random.Generator, region: str) -> np.ndarray:
    """A clean rendered plate, uint8 BGR."""
    fmt = choose_format(rng, region)
    text, display = random_from_format(fmt, rng)
    plate = render_plate(rng, text, display, region, fmt.name)
    return np.clip(plate.image * 255.0, 0, 255).astype(np.uint8)


def paste_plate(scene: np.ndarray, plate: np.ndarray, box: tuple[float, float, float, float],
                rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """Warp ``plate`` onto ``scene`` (in place) to cover ``box``; returns the pasted box.

    The destination quadrilateral is the box with each corner moved by a few percent (a plate
    slightly turned or tilted); the plate is first shrunk with area averaging so small plates are
    not aliased, then brightness-matched, blurred and noised like its surroundings.
    """
    sh, sw = scene.shape[:2]
    x, y, w, h = box
    if w < 8 or h < 4:
        return None
    jitter = np.array([w, h], np.float32) * rng.uniform(-0.06, 0.06, size=(4, 2)).astype(np.float32)
    quad = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32) + jitter
    skew = rng.uniform(-0.12, 0.12) * h  # one side higher than the other: a turned plate
    quad[[1, 2], 1] += skew
    pw = max(8, int(round(w * 1.5)))
    ph = max(4, int(round(h * 1.5)))
    small = cv2.resize(plate, (pw, ph), interpolation=cv2.INTER_AREA)
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    m = cv2.getPerspectiveTransform(src, quad)
    warped = cv2.warpPerspective(small, m, (sw, sh), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones((ph, pw), np.float32), m, (sw, sh), flags=cv2.INTER_LINEAR)
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(sw, x1), min(sh, y1)
    if x1 - x0 < 6 or y1 - y0 < 3:
        return None
    region = scene[y0:y1, x0:x1].astype(np.float32)
    patch = warped[y0:y1, x0:x1].astype(np.float32)
    alpha = mask[y0:y1, x0:x1, None]
    # lighting: pull the plate's brightness toward the spot it covers, with a colour cast
    target = region.mean(axis=(0, 1))
    own = np.maximum((patch * alpha).sum(axis=(0, 1)) / max(alpha.sum(), 1.0), 1.0)
    gain = np.clip(target.mean() / own.mean(), 0.35, 1.3) * rng.uniform(0.8, 1.25)
    cast = np.clip(target / max(target.mean(), 1.0), 0.8, 1.2)
    patch = patch * gain * cast
    sigma = rng.uniform(0.0, 1.2) * (1.0 if w > 40 else 0.6)
    if sigma > 0.2:
        patch = cv2.GaussianBlur(patch, (0, 0), sigma)
    patch += rng.normal(0, rng.uniform(1, 6), size=patch.shape).astype(np.float32)
    out = region * (1 - alpha) + patch * alpha
    scene[y0:y1, x0:x1] = np.clip(out, 0, 255).astype(np.uint8)
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def _overlaps(box: tuple[float, float, float, float], boxes: list) -> bool:
    x, y, w, h = box
    for bx, by, bw, bh in boxes:
        if x < bx + bw and bx < x + w and y < by + bh and by < y + h:
            return True
    return False


NEGATIVE_WORDS = ("ARRIVA", "Wrexham", "POLICE", "Taxi", "SALE", "Open", "EXIT", "STOP",
                  "Pharmacy", "Der neue", "Bus Stop", "HIGHWAY PATROL", "Parking", "Hotel",
                  "DIESEL", "Service", "Welcome", "Coffee", "Bakery", "Express") \
    + US_STATES + US_SLOGANS


def add_text_negatives(scene: np.ndarray, boxes: list, rng: np.random.Generator,
                       count: int) -> None:
    """Paint ``count`` non-plate texts (sign and livery lettering) away from the plates.

    They stay unlabelled, so the detector learns that words on signs, buses and shop fronts are
    background: the main source of its false alarms on plate-free frames.
    """
    sh, sw = scene.shape[:2]
    fonts = [f for group in font_sets().values() for f in group]
    canvas = scene.astype(np.float32) / 255.0
    for _ in range(count):
        word = str(NEGATIVE_WORDS[int(rng.integers(len(NEGATIVE_WORDS)))])
        if rng.random() < 0.3:
            word = word.upper()
        mask = text_mask(word, fonts[int(rng.integers(len(fonts)))], 64)
        th = int(rng.uniform(7, 36))
        tw = int(th * mask.shape[1] / max(mask.shape[0], 1))
        if tw < 10 or tw > sw - 4 or th > sh - 4:
            continue
        x, y = int(rng.integers(0, sw - tw)), int(rng.integers(0, sh - th))
        pad = int(th * 0.4)
        area = (x - pad, y - pad, tw + 2 * pad, th + 2 * pad)
        grown = [(bx - bw * 0.3, by - bh * 0.3, bw * 1.6, bh * 1.6) for bx, by, bw, bh in boxes]
        if _overlaps(area, grown):
            continue
        ink = rng.uniform(0, 1, size=3).astype(np.float32)
        if rng.random() < 0.5:  # a sign panel behind the text
            panel = rng.uniform(0, 1, size=3).astype(np.float32)
            x0, y0 = max(0, area[0]), max(0, area[1])
            x1, y1 = min(sw, area[0] + area[2]), min(sh, area[1] + area[3])
            canvas[y0:y1, x0:x1] = panel
        paint(canvas, mask, x, y, tw, th, ink)
    scene[:] = np.clip(canvas * 255.0, 0, 255).astype(np.uint8)


def make_composite(rows: list[dict], seed: int, index: int,
                   text_negatives: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """Composite ``index`` of the set ``seed``: (BGR image, plate boxes x, y, w, h)."""
    rng = np.random.default_rng([seed, index])
    row = rows[int(rng.integers(len(rows)))]
    scene = cv2.imread(str(Path(row["_folder"]) / row["image"]), cv2.IMREAD_COLOR)
    if scene is None:
        raise ValueError(f"cannot read {row['image']} in {row['_folder']}")
    sh, sw = scene.shape[:2]
    boxes: list[list[int]] = []
    for plate in row["plates"]:
        x, y, w, h = plate["box"]
        if w >= 14 and h >= 5 and rng.random() < 0.85:
            # cover the real plate completely: a slightly larger box around it
            grow_w, grow_h = w * rng.uniform(0.04, 0.12), h * rng.uniform(0.06, 0.18)
            cover = (x - grow_w / 2, y - grow_h / 2, w + grow_w, h + grow_h)
            region = region_for_aspect(w / max(h, 1), rng)
            pasted = paste_plate(scene, rendered_plate(rng, region), cover, rng)
            boxes.append(list(pasted) if pasted else [x, y, w, h])
        else:
            boxes.append([x, y, w, h])
    extra = int(rng.integers(0, 3))
    vehicles = [v["box"] for v in row.get("vehicles", [])]
    for _ in range(extra):
        region = str(rng.choice(["US", "BR", "EU", "GB"], p=[0.35, 0.3, 0.25, 0.1]))
        aspect = {"US": 2.0, "BR": 3.1, "EU": 4.7, "GB": 4.7}[region] * rng.uniform(0.85, 1.15)
        if vehicles and rng.random() < 0.8:
            vx, vy, vw, vh = vehicles[int(rng.integers(len(vehicles)))]
            w = vw * rng.uniform(0.18, 0.32)
            cx = vx + vw * rng.uniform(0.35, 0.65)
            cy = vy + vh * rng.uniform(0.6, 0.85)
        else:
            w = math.exp(rng.uniform(math.log(16), math.log(max(17, 0.3 * sw))))
            cx, cy = rng.uniform(0, sw), rng.uniform(0, sh)
        h = w / aspect
        box = (cx - w / 2, cy - h / 2, w, h)
        if box[0] < 0 or box[1] < 0 or box[0] + w > sw or box[1] + h > sh or w < 12:
            continue
        if _overlaps(box, boxes):
            continue
        pasted = paste_plate(scene, rendered_plate(rng, region), box, rng)
        if pasted:
            boxes.append(list(pasted))
    if text_negatives:
        add_text_negatives(scene, boxes, rng, int(rng.integers(0, text_negatives + 1)))
    return scene, boxes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1500, help="number of composites")
    parser.add_argument("--seed", type=int, default=61, help="random seed")
    parser.add_argument("--out", type=Path, default=Path("runs/synth_det"), help="output folder")
    parser.add_argument("--datasets", type=Path, default=DATASETS_DIR, help="datasets folder")
    parser.add_argument("--text-negatives", type=int, default=0,
                        help="up to this many unlabelled non-plate texts (signs, lettering) "
                             "per composite; 0 = none")
    parser.add_argument("--sheet", type=Path, default=None,
                        help="also write a contact sheet PNG of the first 16 composites")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = load_scenes(args.datasets)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    sheet = []
    with open(args.out / "labels.jsonl", "w", encoding="utf-8") as fh:
        for i in range(args.count):
            image, boxes = make_composite(rows, args.seed, i, args.text_negatives)
            name = f"images/{i:06d}.jpg"
            cv2.imwrite(str(args.out / name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            h, w = image.shape[:2]
            fh.write(json.dumps({"image": name, "width": w, "height": h, "split": "train",
                                 "plates": [{"box": b, "text": None} for b in boxes]}) + "\n")
            if args.sheet and len(sheet) < 16:
                vis = image.copy()
                for x, y, bw, bh in boxes:
                    cv2.rectangle(vis, (x, y), (x + bw, y + bh), (0, 255, 0), 1)
                sheet.append(cv2.resize(vis, (320, 240)))
            if (i + 1) % 250 == 0:
                log.info("composites=%d", i + 1)
    if sheet:
        rows_img = [np.hstack(sheet[i:i + 4]) for i in range(0, len(sheet) - len(sheet) % 4, 4)]
        cv2.imwrite(str(args.sheet), np.vstack(rows_img))
    log.info("wrote %d composites to %s", args.count, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
