"""The TRAINING sets' validation data, as the selection tools read it (no torch needed).

Why its own module: the format-prior check, the operating-point curve and the detector-framed
set all select on the same plate-text val crops with the same region hints; reading them in one
place keeps those choices comparable. Nothing here reads an ``eval-*`` set.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# ``../shared/datasets`` beside the checkout, or where $PLATEGATE_DATASETS says (a worktree).
DATASETS = Path(os.environ.get("PLATEGATE_DATASETS")
                or Path(__file__).resolve().parents[2] / "shared" / "datasets")
SCENE_SETS = ("open-images-plates", "ro-dashcam", "us-roboflow", "kaggle-plates")


@dataclass
class ValCrop:
    """One plate-text val crop: the image as stored, its text, the hint a unit there would
    have (``US-XX``/``US``/``GB``/``EU``, else None) and where it was cut from."""

    image: np.ndarray
    text: str
    hint: str | None
    source_dataset: str
    source_id: str
    index: int  # the plate's index in its scene, from the crop's file name
    plate_box: tuple[int, int, int, int]  # the tight plate box inside the crop


def region_hint(region: str | None) -> str | None:
    """The hint a unit at the transcriber's region would give (None for other/unknown)."""
    region = region or ""
    return region if region.startswith("US") or region in ("GB", "EU") else None


def labels_file(folder: Path) -> Path:
    """``folder/labels.jsonl``, or a one-line exit naming it and where the sets are looked for
    (a tool run without the datasets, or from another folder, used to end in a traceback)."""
    path = Path(folder) / "labels.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: no such file; the training sets are read from "
                         "../shared/datasets beside the checkout, from $PLATEGATE_DATASETS, or "
                         "from --datasets")
    return path


def plate_text_val(datasets: Path = DATASETS, one_row_only: bool = True,
                   split: str = "val") -> list[ValCrop]:
    """The plate-text val split (one-row plates by default); ``split="train"`` gives the
    train split the same way (for training data cut by the detector)."""
    out = []
    folder = Path(datasets) / "plate-text"
    for line in labels_file(folder).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["split"] != split or (one_row_only and row.get("layout") == "two_rows"):
            continue
        image = cv2.imread(str(folder / row["image"]), cv2.IMREAD_COLOR)
        if image is None:
            continue
        stem = Path(row["image"]).stem
        index = int(stem.rsplit("_", 1)[1]) if "_" in stem else 0
        plate = row["plates"][0]
        out.append(ValCrop(image, plate["text"], region_hint(row.get("region")),
                           row["source_dataset"], row["source_id"], index,
                           tuple(int(v) for v in plate["box"])))
    return out


def scene_rows(name: str, split: str = "val", datasets: Path = DATASETS) -> list[dict]:
    """The labels.jsonl rows of one TRAINING scene set for ``split``."""
    path = labels_file(Path(datasets) / name)
    return [r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())
            if r["split"] == split]


class EvaluationSetError(ValueError):
    """A training tool was pointed at an evaluation set (measuring only, never training)."""


def refuse_evaluation_set(folder: Path) -> None:
    """Raise EvaluationSetError if ``folder`` is (inside) an ``eval-*`` set: the datasets
    README allows them for measuring only, so a training tool refuses them outright."""
    for part in Path(folder).resolve().parts:
        if part.startswith("eval-"):
            raise EvaluationSetError(f"{folder}: {part} is an evaluation set (measuring only, "
                                     "never training; ../shared/datasets/README.md)")


def training_crops(folder: Path) -> tuple[list[np.ndarray], list[str]]:
    """Grey crops and texts of a crops set we made from TRAINING data (e.g. the detector's crops
    of the train scenes, ``tools/framed_val.py --split train --save DIR``)."""
    from agent.vision.evaluate import load_crops
    refuse_evaluation_set(folder)
    images, texts = [], []
    for item in load_crops(Path(folder)):
        refuse_evaluation_set(item.image)
        img = cv2.imread(str(item.image), cv2.IMREAD_GRAYSCALE)
        if img is not None and item.plates[0][0]:
            images.append(img)
            texts.append(item.plates[0][0])
    return images, texts
