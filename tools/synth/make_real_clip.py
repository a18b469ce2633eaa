"""A clip from real photos: a virtual camera pans over TRAINING-set scenes so real plates pass.

    python tools/synth/make_real_clip.py --out runs/passes/real.mp4 --passes 60 --seed 1

Each pass is one photo from the training scene sets (open-images-plates, ro-dashcam,
us-roboflow, kaggle-plates; `split == "train"` only; the evaluation sets are never read) whose
plate has a transcription in `plate-text` (matched by source id and plate index). The scenes
are stored small (480 px), so the photo is scaled up to put the plate at 130-190 px and the
plate's own crop from `plate-text` (cut from the same photo at its native resolution) is laid
back over it. The camera then pans so the plate crosses the picture, zooming in or out by up
to 30%, turning by up to 4 degrees, with a little perspective change, the horizontal motion
blur of the pan (a 1/300 s exposure) and sensor noise. Photos are chosen with one labelled
plate, its crop at least 90 px wide, one photo per plate text, one-row plates unless
`--layouts` says otherwise (the OCR reads one-row plates: docs/ocr.md). Writes OUT (MP4) and OUT.json
in the form of tools/synth/make_passes.py (what tools/bench_passes.py reads). With `--plate-free`
the camera pans over plate-free views of the same sets' val scenes instead: a clip on which every
read event is a false one.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
# ../shared/datasets beside the checkout (a git worktree sits one folder deeper)
DATASETS = next((p for p in (ROOT.parent / "shared" / "datasets", ROOT.parents[1] / "shared" / "datasets")
                 if p.is_dir()), ROOT.parent / "shared" / "datasets")
SCENE_SETS = ("open-images-plates", "ro-dashcam", "us-roboflow", "kaggle-plates")
MIN_CROP_WIDTH = 90
EXPOSURE_S = 1 / 300  # the pan's motion blur, as tools/synth/make_passes.py
GREY = (110, 110, 110)


def candidates(datasets: Path, layouts: tuple[str, ...] = ("one_row",)) -> list[dict]:
    """Training photos with exactly one labelled plate that plate-text transcribed, of `layouts`."""
    scenes: dict[tuple[str, str], dict] = {}
    for name in SCENE_SETS:
        for line in (datasets / name / "labels.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row["split"] == "train":
                scenes.setdefault((name, row["source_id"]), row)
    out, texts = [], set()
    for line in (datasets / "plate-text" / "labels.jsonl").read_text().splitlines():
        crop = json.loads(line)
        if crop["split"] != "train" or crop["source_dataset"] not in SCENE_SETS or crop["layout"] not in layouts:
            continue
        scene = scenes.get((crop["source_dataset"], crop["source_id"]))
        index = int(Path(crop["image"]).stem.rsplit("_", 1)[1])
        plate = crop["plates"][0]
        if scene is None or len(scene["plates"]) != 1 or index != 0 or plate["box"][2] < MIN_CROP_WIDTH:
            continue
        if plate["text"] in texts:
            continue
        texts.add(plate["text"])
        out.append({"scene": datasets / crop["source_dataset"] / scene["image"], "scene_box": scene["plates"][0]["box"],
                    "crop": datasets / "plate-text" / crop["image"], "crop_box": plate["box"], "text": plate["text"],
                    "dataset": crop["source_dataset"], "region": crop.get("region"), "layout": crop["layout"]})
    return out


def _plate_layer(item: dict) -> tuple[np.ndarray, np.ndarray]:
    """The native-resolution crop, and the affine that maps its pixels onto scene pixels."""
    crop = cv2.imread(str(item["crop"]), cv2.IMREAD_COLOR)
    cx, cy, cw, ch = item["crop_box"]
    sx, sy, sw, sh = item["scene_box"]
    r = sw / cw  # scene pixels per crop pixel
    affine = np.array([[r, 0, sx - cx * r], [0, sh / ch, sy - cy * sh / ch], [0, 0, 1]], np.float64)
    return crop, affine


def _camera(rng: np.random.Generator, item: dict, width: int, height: int, frames: int):
    """Per frame, the homography from scene pixels to output pixels."""
    sx, sy, sw, sh = item["scene_box"]
    scale0 = float(rng.uniform(130, 190)) / sw
    zoom = float(rng.uniform(-0.3, 0.3))
    angle0, angle1 = (math.radians(float(v)) for v in rng.uniform(-4, 4, 2))
    tilt = rng.uniform(-1, 1, 2) * 2e-4 / scale0
    direction = 1 if rng.random() < 0.5 else -1
    y0, y1 = rng.uniform(0.4, 0.75, 2) * height
    pcx, pcy = sx + sw / 2, sy + sh / 2
    for f in range(frames):
        t = f / max(1, frames - 1)
        x = (-0.2 + 1.4 * t) * width if direction > 0 else (1.2 - 1.4 * t) * width
        y = y0 + (y1 - y0) * t
        s = scale0 * (1 + zoom * (t - 0.5))
        a = angle0 + (angle1 - angle0) * t
        move = np.array([[1, 0, -pcx], [0, 1, -pcy], [0, 0, 1]], np.float64)
        rot = np.array([[s * math.cos(a), -s * math.sin(a), 0], [s * math.sin(a), s * math.cos(a), 0], [0, 0, 1]])
        persp = np.array([[1, 0, 0], [0, 1, 0], [tilt[0], tilt[1], 1]], np.float64)
        place = np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], np.float64)
        yield place @ rot @ persp @ move, abs(1.4 * width / frames)


def make_real_clip(out: Path, seed: int, count: int = 60, width: int = 960, height: int = 540, fps: float = 10.0,
                   datasets: Path = DATASETS, gap_frames: int = 6, layouts: tuple[str, ...] = ("one_row",),
                   only: frozenset[str] | None = None) -> dict:
    """`only`: use just the photos of these plate texts (a test's chosen few)."""
    rng = np.random.default_rng([seed, 5151])
    pool = [item for item in candidates(datasets, layouts) if only is None or item["text"] in only]
    if len(pool) < count:
        raise SystemExit(f"only {len(pool)} usable training photos, asked for {count}")
    chosen = [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a video writer for {out}")
    noise = np.random.default_rng([seed, 6])
    passes, f = [], 0
    blank = np.full((height, width, 3), GREY, np.uint8)
    try:
        for item in chosen:
            scene = cv2.imread(str(item["scene"]), cv2.IMREAD_COLOR)
            crop, crop_to_scene = _plate_layer(item)
            frames = int(rng.integers(22, 40))
            visible, full = [], []
            sx, sy, sw, sh = item["scene_box"]
            corners = np.float32([[sx, sy], [sx + sw, sy], [sx + sw, sy + sh], [sx, sy + sh]]).reshape(-1, 1, 2)
            for H, speed in _camera(rng, item, width, height, frames):
                image = cv2.warpPerspective(scene, H, (width, height), flags=cv2.INTER_CUBIC,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=GREY)
                Hc = H @ crop_to_scene
                plate = cv2.warpPerspective(crop, Hc, (width, height), flags=cv2.INTER_CUBIC)
                mask = cv2.warpPerspective(np.full(crop.shape[:2], 255, np.uint8), Hc, (width, height),
                                           flags=cv2.INTER_NEAREST)
                mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
                image[mask > 0] = plate[mask > 0]
                image, blur = _blur_and_noise(image, speed * fps, noise)
                box = cv2.perspectiveTransform(corners, H).reshape(-1, 2)
                x0, y0 = box.min(axis=0)
                x1, y1 = box.max(axis=0)
                if x1 > 0 and x0 < width and y1 > 0 and y0 < height:
                    visible.append(f)
                    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
                        full.append(f)
                writer.write(image)
                f += 1
            for _ in range(gap_frames):
                writer.write(blank)
                f += 1
            passes.append({"text": item["text"], "dataset": item["dataset"], "region": item["region"],
                           "layout": item["layout"],
                           "scene": f"{item['dataset']}/{Path(item['scene']).name}", "lane": 0,
                           "speed_px_s": round(speed * fps, 1), "stop_s": 0.0, "blur_px": blur,
                           "first_frame": visible[0] if visible else None, "last_frame": visible[-1] if visible else None,
                           "first_full_frame": full[0] if full else None, "last_full_frame": full[-1] if full else None})
    finally:
        writer.release()
    sidecar = {"video": out.name, "seed": seed, "fps": fps, "width": width, "height": height, "frames": f,
               "lighting": "real", "passes": passes}
    Path(str(out) + ".json").write_text(json.dumps(sidecar, indent=1) + "\n")
    return sidecar


def _blur_and_noise(image: np.ndarray, speed_px_s: float, noise: np.random.Generator) -> tuple[np.ndarray, int]:
    """The pan's horizontal motion blur (EXPOSURE_S) and sensor noise; returns the blur length too."""
    blur = int(round(speed_px_s * EXPOSURE_S))
    if blur >= 2:
        image = cv2.filter2D(image, -1, np.ones((1, blur), np.float32) / blur)
    noisy = image.astype(np.int16) + noise.normal(0, 2.0, image.shape[:2])[:, :, None].astype(np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8), blur


def make_plate_free_clip(out: Path, seed: int, count: int = 60, width: int = 960, height: int = 540,
                         fps: float = 10.0, datasets: Path = DATASETS, gap_frames: int = 6) -> dict:
    """The same camera over plate-free views: crops of the training sets' val-split scenes that
    avoid every labelled plate (tools/bench_detect.py plate_free_frames: vehicles, signs,
    lettering). Scaled as a real clip scales its photos (the crop's width becomes 4 x 130-190
    px), they cross the picture like a pass. OUT.json lists no pass: every read event is false,
    unless a crop holds a plate the labels missed (Open Images leaves some small ones unboxed;
    check an event's crop by eye)."""
    from tools.bench_detect import plate_free_frames  # the views the cut was checked on (docs/detection.md)

    rng = np.random.default_rng([seed, 7171])
    views = plate_free_frames(datasets, count, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a video writer for {out}")
    noise = np.random.default_rng([seed, 6])
    blank = np.full((height, width, 3), GREY, np.uint8)
    f, shown = 0, []
    try:
        for name, view in views:
            h, w = view.shape[:2]
            item = {"scene_box": (w * 3 / 8, h * 3 / 8, w / 4, h / 4)}
            for H, speed in _camera(rng, item, width, height, int(rng.integers(22, 40))):
                image = cv2.warpPerspective(view, H, (width, height), flags=cv2.INTER_CUBIC,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=GREY)
                writer.write(_blur_and_noise(image, speed * fps, noise)[0])
                f += 1
            for _ in range(gap_frames):
                writer.write(blank)
                f += 1
            shown.append(name)
    finally:
        writer.release()
    sidecar = {"video": out.name, "seed": seed, "fps": fps, "width": width, "height": height, "frames": f,
               "lighting": "real", "plate_free": shown, "passes": []}
    Path(str(out) + ".json").write_text(json.dumps(sidecar, indent=1) + "\n")
    return sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a clip of real training-set plates crossing the picture.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=60)
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--layouts", default="one_row",
                        help="plate layouts to use, comma-separated: one_row, two_rows (default one_row: the "
                             "OCR reads one-row plates; docs/ocr.md)")
    parser.add_argument("--plate-free", action="store_true",
                        help="pan over PASSES plate-free views of training scenes instead (no pass: every "
                             "read event on it is false)")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    if args.plate_free:
        sidecar = make_plate_free_clip(args.out, args.seed, args.passes, datasets=args.datasets)
    else:
        sidecar = make_real_clip(args.out, args.seed, args.passes, datasets=args.datasets,
                                 layouts=tuple(args.layouts.split(",")))
    print(json.dumps({"video": str(args.out), "passes": len(sidecar["passes"]), "frames": sidecar["frames"],
                      "seconds": round(time.monotonic() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
