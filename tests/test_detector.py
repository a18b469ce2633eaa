"""Plate detector: the shipped ONNX model on synthetic scenes, and the scaling/tiling arithmetic.

The model tests use the real models/plate_detector.onnx through the manifest (sha256-checked).
The geometry tests use a stand-in session that "detects" bright rectangles, so the coordinate
transforms (resize, tiles, padding, NMS) are checked exactly, independent of model quality.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.vision.detector import (Detection, Pass, PlateDetector, _tile_starts, decode_heatmap,
                                   nms, prepare_input)
from agent.vision.models import ModelError
from helpers.scenes import draw_plate, scene_with_plate, street_scene

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


# --- helpers -------------------------------------------------------------------------------

def iou_xywh(a, b) -> float:
    ax0, ay0, ax1, ay1 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx0, by0, bx1, by1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    return PlateDetector.from_models(MODELS_DIR, threads=1)


# --- the shipped model ---------------------------------------------------------------------

def test_manifest_entry_describes_preprocessing():
    manifest = json.loads((MODELS_DIR / "manifest.json").read_text())
    entry = manifest["models"]["plate_detector"]
    assert entry["input"]["layout"] == "NCHW"
    assert entry["input"]["channels"] == "RGB"
    assert entry["output"]["stride"] == 4
    assert "open-images-plates" in entry["trained_on"]
    assert "CC BY 4.0" in entry["attribution"]
    assert (MODELS_DIR / entry["file"]).stat().st_size < 20 * 1024 * 1024


@pytest.mark.parametrize("plate_w,size", [(120, (720, 1280)), (60, (720, 1280)),
                                          (200, (1080, 1920))])
def test_finds_plate_on_synthetic_scene(detector, plate_w, size):
    frame, box = scene_with_plate(size[0], size[1], plate_w, cx=size[1] // 2 + 37,
                                  cy=int(size[0] * 0.6))
    found = detector.detect(frame)
    assert found, "no plate found"
    best = max(found, key=lambda d: iou_xywh(d.box, box))
    assert iou_xywh(best.box, box) > 0.5, (best, box)
    assert isinstance(best, Detection) and 0.0 < best.score <= 1.0


def test_finds_several_plates(detector):
    frame, box_a = scene_with_plate(720, 1280, 110, cx=330, cy=450, seed=1)
    plate = draw_plate(150, "XY 987 Z")
    ph, pw = plate.shape[:2]
    cv2.rectangle(frame, (800, 300), (1200, 600), (90, 90, 90), -1)
    frame[480:480 + ph, 920:920 + pw] = plate
    box_b = (920, 480, pw, ph)
    found = detector.detect(frame)
    for box in (box_a, box_b):
        assert max((iou_xywh(d.box, box) for d in found), default=0) > 0.5, (box, found)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_frame_gives_nothing(detector, value):
    frame = np.full((720, 1280, 3), value, np.uint8)
    assert detector.detect(frame) == []


def test_plate_free_scene_gives_nothing(detector):
    assert detector.detect(street_scene(1080, 1920, seed=5)) == []


@pytest.mark.slow
def test_handles_4k_frame_with_small_plate(detector):
    """A 4K frame is run at a larger scale than max_side so a 60 px plate (1.5% of the width)
    is still found."""
    frame, box = scene_with_plate(2160, 3840, 60, cx=2900, cy=1500, seed=2)
    plan = detector.plan(2160, 3840)
    assert plan[0].scale * 3840 > detector.max_side
    found = detector.detect(frame)
    assert max((iou_xywh(d.box, box) for d in found), default=0) > 0.5, (box, found)


@pytest.mark.slow
def test_handles_4k_frame_with_large_plate(detector):
    frame, box = scene_with_plate(2160, 3840, 400, cx=1200, cy=1200, seed=3)
    found = detector.detect(frame)
    assert max((iou_xywh(d.box, box) for d in found), default=0) > 0.5, (box, found)


@pytest.mark.parametrize("bad", [np.zeros((100, 100), np.uint8),
                                 np.zeros((100, 100, 4), np.uint8),
                                 np.zeros((100, 100, 1), np.uint8)])
def test_non_three_channel_input_is_a_clear_error(detector, bad):
    with pytest.raises(ValueError, match="H x W x 3 BGR image"):
        detector.detect(bad)


def test_float_input_is_a_clear_error(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((100, 100, 3), np.float32))


def test_tiny_frame_is_not_an_error(detector):
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []
    assert isinstance(detector.detect(np.zeros((20, 31, 3), np.uint8)), list)


def test_tampered_model_file_is_refused(tmp_path):
    for name in ("manifest.json", "plate_detector.onnx"):
        shutil.copy(MODELS_DIR / name, tmp_path / name)
    with open(tmp_path / "plate_detector.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match="plate_detector.onnx"):
        PlateDetector.from_models(tmp_path)


# --- geometry with a stand-in session -----------------------------------------------------

class _Input:
    name = "image"
    shape = [1, 3, "height", "width"]
    type = "tensor(float)"


class BrightBoxSession:
    """Stands in for onnxruntime: "detects" each bright (near-white) blob as a plate.

    It returns the model's output layout (heat 1x1xH/4xW/4, reg 1x4xH/4xW/4) so the detector's
    scaling, tiling, decoding and NMS run exactly as with the real model.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def get_inputs(self):
        return [_Input()]

    def run(self, _names, feeds):
        x = feeds["image"]
        self.calls.append(x.shape[2:])
        bright = (x[0, 0] > 0.47).astype(np.uint8)  # above mid-grey between 60 and 255
        oh, ow = x.shape[2] // 4, x.shape[3] // 4
        heat = np.zeros((1, 1, oh, ow), np.float32)
        reg = np.zeros((1, 4, oh, ow), np.float32)
        n, _, stats, _ = cv2.connectedComponentsWithStats(bright)
        for i in range(1, n):
            x0, y0, w, h, _ = stats[i]
            cx, cy = (x0 + w / 2) / 4, (y0 + h / 2) / 4
            ix, iy = min(int(cx), ow - 1), min(int(cy), oh - 1)
            heat[0, 0, iy, ix] = 0.9
            reg[0, :, iy, ix] = (cx - ix, cy - iy, np.log(w / 4), np.log(h / 4))
        return heat, reg


ENTRY = {"input": {"max_side": 512, "multiple": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
         "output": {"stride": 4}, "score_threshold": 0.5, "min_plate_input_px": 14}


def _white_box_frame(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    frame = np.full((height, width, 3), 60, np.uint8)
    x, y, w, h = box
    frame[y:y + h, x:x + w] = 255
    return frame


@pytest.mark.parametrize("proposals", [True, False])
@pytest.mark.parametrize("tile_side", [512, 1536])
@pytest.mark.parametrize("size,box", [((480, 640), (100, 200, 120, 30)),
                                      ((1080, 1920), (1500, 900, 200, 44)),
                                      ((2160, 3840), (3000, 1700, 48, 12)),
                                      ((2160, 3840), (1000, 600, 400, 90)),
                                      ((2160, 3840), (1270, 1000, 60, 14))])
def test_boxes_come_back_in_frame_pixels(size, box, tile_side, proposals):
    session = BrightBoxSession()
    det = PlateDetector(session, ENTRY, min_plate_px=40, tile_side=tile_side,
                        proposals=proposals)
    found = det.detect(_white_box_frame(*size, box))
    assert len(found) == 1, found
    # small plates are a few pixels tall at tile scale: allow a pixel of rounding there
    assert iou_xywh(found[0].box, box) > 0.6, (found[0].box, box)
    for shape in session.calls:
        assert shape[0] % 32 == 0 and shape[1] % 32 == 0
        assert max(shape) <= tile_side + 31


def test_4k_detail_runs_only_in_windows_around_what_half_the_scale_proposes():
    session = BrightBoxSession()
    det = PlateDetector(session, ENTRY, min_plate_px=40)
    found = det.detect(_white_box_frame(2160, 3840, (3000, 1700, 120, 30)))
    assert len(found) == 1 and iou_xywh(found[0].box, (3000, 1700, 120, 30)) > 0.6
    proposal, *windows = session.calls
    assert tuple(proposal) == (384, 672)  # the whole frame at 0.175
    assert windows and all(h * w < 0.1 * 768 * 1344 for h, w in windows)


def test_windows_covering_most_of_the_frame_give_way_to_the_whole_detail_pass():
    frame = np.full((2160, 3840, 3), 60, np.uint8)
    for y in range(100, 2000, 300):  # plates everywhere: windows would cover the frame
        for x in range(100, 3700, 400):
            frame[y:y + 30, x:x + 120] = 255
    session = BrightBoxSession()
    found = PlateDetector(session, ENTRY, min_plate_px=40).detect(frame)
    assert (768, 1344) in [tuple(c) for c in session.calls]
    assert len(found) == 50  # MAX_DETECTIONS of the 63


def test_overlapping_windows_merge_into_their_union():
    from agent.vision.detector import _merge_overlapping

    assert sorted(_merge_overlapping([(0, 0, 10, 10), (5, 5, 20, 20), (19, 0, 30, 6),
                                      (100, 100, 110, 110)])) == [(0, 0, 30, 20),
                                                                  (100, 100, 110, 110)]
    assert _merge_overlapping([(0, 0, 10, 10), (10, 0, 20, 10)]) == [(0, 0, 10, 10),
                                                                     (10, 0, 20, 10)]


def test_pass_plan_by_frame_size():
    det = PlateDetector(BrightBoxSession(), ENTRY, min_plate_px=40)
    # a small image runs at full scale, plus a coarse pass for a plate filling most of it
    assert [(round(p.scale, 3), p.tiled) for p in det.plan(360, 480)] == [(1.0, False),
                                                                          (0.4, False)]
    # 720p: one pass at max_side keeps a 40 px plate at 16 px
    assert [(round(p.scale, 3), p.tiled) for p in det.plan(720, 1280)] == [(0.4, False)]
    # 4K: one detail pass at 14/40 (1344 x 756 fits one tile), big plates stay in range; it
    # runs in proposed windows, which 1080p's detail pass (672 x 378) is too small to gain from
    assert det.plan(2160, 3840) == [Pass(0.35, tiled=False, windows=True)]
    assert det.plan(1080, 1920) == [Pass(0.35, tiled=False, windows=False)]
    # smaller tiles: the detail pass is tiled
    tiled = PlateDetector(BrightBoxSession(), ENTRY, min_plate_px=40, tile_side=512)
    assert tiled.plan(2160, 3840)[0].tiled
    # plates down to 20 px: a detail pass at 0.7 would make a 400 px plate too big for the
    # model, so a coarse whole-frame pass is added
    fine = PlateDetector(BrightBoxSession(), ENTRY, min_plate_px=20)
    assert [(round(p.scale, 3), p.tiled) for p in fine.plan(2160, 3840)] == [(0.7, True),
                                                                             (0.133, False)]
    # a camera set up for big plates only needs one small pass even at 4K
    big = PlateDetector(BrightBoxSession(), ENTRY, min_plate_px=160)
    assert [(round(p.scale, 3), p.tiled) for p in big.plan(2160, 3840)] == [(0.133, False)]


def test_tile_starts_cover_the_length_with_overlap():
    for length in (100, 512, 513, 1000, 1536, 3840):
        starts = _tile_starts(length, 512, 128)
        assert starts[0] == 0 and starts[-1] + 512 >= length
        assert all(b - a <= 512 - 128 for a, b in zip(starts, starts[1:]))


def test_decode_and_nms():
    heat = np.zeros((8, 8), np.float32)
    reg = np.zeros((4, 8, 8), np.float32)
    heat[2, 3] = 0.9
    heat[2, 4] = 0.8  # not a local maximum: suppressed by the 3x3 peak test
    reg[:, 2, 3] = (0.5, 0.5, np.log(10), np.log(2))
    boxes = decode_heatmap(heat, reg, 4, 0.3)
    assert len(boxes) == 1
    x0, y0, x1, y1, s = boxes[0]
    assert (x0, y0, x1, y1) == pytest.approx((-6, 6, 34, 14))
    assert s == pytest.approx(0.9)
    dup = [(0, 0, 10, 10, 0.9), (1, 1, 11, 11, 0.8), (50, 50, 60, 60, 0.7)]
    assert nms(dup, 0.4) == [dup[0], dup[2]]


def test_peaks_are_the_3x3_maxima_including_the_map_edges_and_plateaus():
    """Every cell at least as high as its 3x3 neighbourhood (cells outside the map do not
    count) and over the threshold is a peak: checked against the neighbourhood written out."""
    rng = np.random.default_rng(3)
    heat = rng.random((37, 53)).astype(np.float32)
    heat[0, 0] = heat[-1, -1] = heat[0, 20] = 1.0  # corners and an edge
    heat[10, 10:12] = 0.999  # a plateau of two cells: both count
    reg = np.zeros((4, 37, 53), np.float32)
    padded = np.pad(heat, 1, constant_values=-1.0)
    want = sorted((int(y), int(x)) for y, x in zip(*np.nonzero(
        (heat >= np.max([padded[dy:dy + 37, dx:dx + 53] for dy in range(3) for dx in range(3)],
                        axis=0)) & (heat >= 0.5))))
    boxes = decode_heatmap(heat, reg, 1, 0.5, max_detections=10_000)
    got = sorted((int(round((y0 + y1) / 2)), int(round((x0 + x1) / 2)))
                 for x0, y0, x1, y1, _ in boxes)
    assert got == want
    assert {(0, 0), (36, 52), (0, 20), (10, 10), (10, 11)} <= set(want)


def test_prepare_input_pads_to_multiple():
    tensor = prepare_input(np.zeros((33, 70, 3), np.uint8), ENTRY)
    assert tensor.shape == (1, 3, 64, 96)
    assert tensor.dtype == np.float32
    assert tensor[0, 0, 0, 0] == pytest.approx(-2.0)
    assert tensor[0, 0, 63, 95] == 0.0  # padding is the normalised zero


def _reference_input(image_rgb: np.ndarray, entry: dict) -> np.ndarray:
    """The plain way to build the tensor (whole image to float32, normalise, transpose, pad):
    what prepare_input computed before it normalised plane by plane."""
    inp = entry["input"]
    multiple = int(inp.get("multiple", 32))
    h, w = image_rgb.shape[:2]
    ph, pw = max(multiple, -(-h // multiple) * multiple), max(multiple, -(-w // multiple) * multiple)
    mean = np.asarray(inp.get("mean", [0.5, 0.5, 0.5]), dtype=np.float32)
    std = np.asarray(inp.get("std", [0.25, 0.25, 0.25]), dtype=np.float32)
    pixels = image_rgb.astype(np.float32)
    pixels *= 1.0 / (255.0 * std)
    pixels -= mean / std
    tensor = np.zeros((1, 3, ph, pw), dtype=np.float32)
    tensor[0, :, :h, :w] = pixels.transpose(2, 0, 1)
    return tensor


@pytest.mark.parametrize("shape", [(33, 70), (288, 512), (64, 96), (1, 1)])
def test_prepare_input_is_bit_identical_to_float_conversion(shape):
    """The fast plane-by-plane normalisation changes no bit of the model input, for RGB and
    for BGR taken in RGB order, with per-channel mean/std and with padding on both sides."""
    rng = np.random.default_rng(sum(shape))
    rgb = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    entry = {"input": {"multiple": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    for e in (ENTRY, entry):
        want = _reference_input(rgb, e)
        assert np.array_equal(prepare_input(rgb, e), want)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        assert np.array_equal(prepare_input(bgr, e, bgr=True), want)


def test_the_config_can_turn_proposals_off_for_the_whole_detail_pass():
    from agent.config.schema import RecognizerConfig
    from agent.vision.recognizer import Recognizer

    default = Recognizer.from_config(RecognizerConfig())
    assert default.detector.plan(2160, 3840)[0].windows
    whole = Recognizer.from_config(RecognizerConfig(detail_proposals=False))
    assert not whole.detector.plan(2160, 3840)[0].windows


@pytest.mark.parametrize("shape,scale,size", [((2160, 3840), 0.175, (378, 672)),
                                              ((2160, 3840), 0.35, (756, 1344)),
                                              ((2161, 3841), 0.175, (378, 672)),
                                              ((720, 1280), 0.4, (288, 512)),
                                              ((1000, 1000), 0.5, (500, 500))])
def test_shrinking_gives_the_planned_size_and_keeps_flat_areas_flat(shape, scale, size):
    image = np.full((*shape, 3), 137, np.uint8)
    image[: shape[0] // 2] = 20  # an edge: the two halves stay apart
    small = PlateDetector._resize(image, scale)
    assert small.shape == (*size, 3)
    assert small[0, 0, 0] == 20 and small[-1, -1, 0] == 137
