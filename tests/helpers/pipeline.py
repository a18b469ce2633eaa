"""A scripted recognizer and replay frames for pipeline tests (runtime, not vision: the
recognizer reads the plate number painted into pixel (0, 0) of each frame)."""
from __future__ import annotations

import queue
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PLATES = ["ABC1234", "XKZ5521", "7RTY093", "MNP4410", "QWE8876", "LDS2039",
          "HJK6612", "ZUV0481", "BRT7735", "PLO3329", "GHE9954", "WYX1167"]
FRAMES_PER_PLATE = 3


@dataclass
class Hit:
    text: str
    confidence: float
    box: tuple[int, int, int, int]
    candidates: tuple = ()
    format: str | None = None


class ScriptedRecognizer:
    def recognize(self, image: np.ndarray) -> list[Hit]:
        number = int(image[0, 0, 0])
        if number == 255:
            return []
        return [Hit(PLATES[number], 0.95, (40, 40, 80, 20), format="test.LLLDDDD")]


class RecordingQueue(queue.Queue):
    """The read queue between tracker and outbox, remembering every read the tracker emitted."""

    def __init__(self):
        super().__init__()
        self.emitted: list = []

    def put(self, item, block=True, timeout=None):
        self.emitted.append(item)
        super().put(item, block, timeout)


def write_frames(folder: Path) -> None:
    folder.mkdir()
    index = 0
    for number in range(len(PLATES)):
        for _ in range(FRAMES_PER_PLATE):
            image = np.full((120, 160, 3), 60, np.uint8)
            image[0, 0] = number
            cv2.imwrite(str(folder / f"{index:04d}.png"), image)
            index += 1


def make_config(tmp_path: Path, extra: str = "") -> Path:
    """A unit config replaying the scripted frames; ``extra`` is appended TOML (more tables)."""
    write_frames(tmp_path / "frames")
    config = tmp_path / "unit.toml"
    config.write_text(f"""
[unit]
state_dir = "{tmp_path / 'state'}"
[source]
kind = "image_folder"
path = "{tmp_path / 'frames'}"
fps = 120
frame_queue = 256
[scene]
motion_gate = false  # the scripted frames differ in one pixel only
[tracker]
merge_window_s = 0.1
stopped_timeout_s = 0.1  # every scripted plate stands at the same spot
[supervisor]
backoff_initial_s = 0.01
backoff_max_s = 0.05
{extra}""")
    return config
