"""Privacy masks: masked pixels are in no image that leaves the unit, and a masked plate is never read.

Real parts: a rendered road frame through OpenCV image files, the shipped models, the whole
pipeline up to the outbox, and the capture-test snapshot. The masked area is painted a pure
colour found nowhere else in the frame (magenta, unless the rendered plate has some; never an
overlay colour of the snapshot), so any trace of it in an outgoing JPEG is easy to find; a
control run without the mask shows the same crops do contain it.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.capture.probe import probe
from agent.config.loader import load_config
from agent.runtime.pipeline import build_pipeline
from agent.vision.recognizer import Recognizer
from helpers.pipeline import RecordingQueue
from tools.synth.make_passes import make_passes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PATCH_COLOURS = ((255, 0, 255), (255, 255, 0), (255, 0, 0), (128, 0, 255))  # BGR: magenta, cyan, blue, pink


def colour_pixels(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    """Pixels within 60 grey levels of `colour` on every channel (JPEG keeps a flat patch that close)."""
    return int((np.abs(image.astype(int) - np.array(colour)).max(axis=2) < 60).sum())


def patch_pixels(jpeg: bytes | None, colour: tuple[int, int, int]) -> int:
    if jpeg is None:
        return 0
    return colour_pixels(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), colour)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    """One road frame with a whole plate, a patch of a unique colour just above it, and their boxes."""
    work = tmp_path_factory.mktemp("privacy")
    clip = work / "road.mp4"
    truth = make_passes(clip, seed=5, count=1, width=640, height=360, stop_share=0.0, exposure_s=0)
    middle = (truth["passes"][0]["first_full_frame"] + truth["passes"][0]["last_full_frame"]) // 2
    capture = cv2.VideoCapture(str(clip))
    capture.set(cv2.CAP_PROP_POS_FRAMES, middle)
    ok, frame = capture.read()
    assert ok
    [hit] = Recognizer.from_models(ROOT / "models").recognize(frame)
    x, y, w, h = hit.box
    patch = (x, max(0, y - 2 * h), x + w, max(1, y - h))  # inside the vehicle crop the agent keeps
    colour = next(c for c in PATCH_COLOURS if colour_pixels(frame, c) == 0)
    frame[patch[1]:patch[3], patch[0]:patch[2]] = colour
    return {"work": work, "frame": frame, "plate": (x, y, x + w, y + h), "patch": patch, "text": hit.text,
            "colour": colour}


def polygon(box, size, grow: int = 3) -> list[list[float]]:
    x0, y0, x1, y1 = box
    width, height = size
    fx0, fy0 = max(0, x0 - grow) / (width - 1), max(0, y0 - grow) / (height - 1)
    fx1, fy1 = min(width - 1, x1 + grow) / (width - 1), min(height - 1, y1 + grow) / (height - 1)
    return [[fx0, fy0], [fx1, fy0], [fx1, fy1], [fx0, fy1]]


def run_agent(scene: dict, name: str, masks: list) -> tuple[list, dict]:
    folder = scene["work"] / name
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:03d}.png"), scene["frame"])
    config = scene["work"] / f"{name}.toml"
    config.write_text(f"""
[unit]
state_dir = "{scene['work'] / (name + '-state')}"
[source]
kind = "image_folder"
path = "{folder}"
fps = 50
frame_queue = 16
[recognizer]
models_dir = "{ROOT / 'models'}"
[scene]
motion_gate = false
privacy_masks = {json.dumps(masks)}
[tracker]
merge_window_s = 0.5
""")
    pipeline = build_pipeline(load_config(config))
    reads = RecordingQueue()
    pipeline.track.reads = pipeline.accept.reads = reads
    pipeline.start()
    assert pipeline.accept.join(60), "pipeline did not drain"
    stats = pipeline.stats()
    pipeline.shutdown()
    return reads.emitted, stats


def test_masked_pixels_are_in_no_crop_that_leaves_the_unit(scene):
    size = scene["frame"].shape[1], scene["frame"].shape[0]
    control, _ = run_agent(scene, "unmasked", [])
    assert [r.plate for r in control] == [scene["text"]]
    assert patch_pixels(control[0].vehicle_jpeg, scene["colour"]) > 50, "the control crop must contain the patch"
    masked, stats = run_agent(scene, "masked", [polygon(scene["patch"], size)])
    assert [r.plate for r in masked] == [scene["text"]] and stats["frames_recognized"] == 5
    for read in masked:
        assert patch_pixels(read.vehicle_jpeg, scene["colour"]) == 0
        assert patch_pixels(read.plate_crop_jpeg, scene["colour"]) == 0


def test_a_plate_under_a_mask_is_never_read(scene):
    size = scene["frame"].shape[1], scene["frame"].shape[0]
    reads, stats = run_agent(scene, "plate-masked", [polygon(scene["plate"], size, grow=6)])
    assert stats["frames_recognized"] == 5 and reads == []


def test_the_capture_test_snapshot_shows_the_mask_not_what_it_hides(scene, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), scene["frame"])
    size = scene["frame"].shape[1], scene["frame"].shape[0]
    config = tmp_path / "unit.toml"
    config.write_text(f"""
[source]
kind = "image_folder"
path = "{folder}"
loop = true
[recognizer]
models_dir = "{ROOT / 'models'}"
[scene]
roi = [[0.0, 0.3], [1.0, 0.3], [1.0, 1.0], [0.0, 1.0]]
privacy_masks = {json.dumps([polygon(scene["patch"], size)])}
""")
    snapshot = tmp_path / "snap.jpg"
    report = probe(load_config(config), seconds=1.0, recognizer=Recognizer.from_models(ROOT / "models"),
                   snapshot=snapshot)
    assert [p["text"] for p in report.plates] == [scene["text"]]
    data = snapshot.read_bytes()
    assert data[:2] == b"\xff\xd8" and patch_pixels(data, scene["colour"]) == 0


def test_grab_snapshot_returns_a_masked_annotated_jpeg(scene, tmp_path):
    from agent.capture.probe import grab_snapshot

    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), scene["frame"])
    size = scene["frame"].shape[1], scene["frame"].shape[0]
    config = tmp_path / "unit.toml"
    config.write_text(f'[source]\nkind = "image_folder"\npath = "{folder}"\n[scene]\n'
                      f'privacy_masks = {json.dumps([polygon(scene["patch"], size)])}\n')
    data = grab_snapshot(load_config(config))
    assert data[:2] == b"\xff\xd8" and patch_pixels(data, scene["colour"]) == 0
