"""Plate detector: finds licence plates in a camera frame with our own ONNX heatmap model.

Why this shape: the unit has two CPU cores and must keep up with traffic, so the detector is a
small fully-convolutional centre-heatmap network (CenterNet-style, stride 4) rather than a
vehicle-then-plate cascade. One pass over the resized frame gives, per output cell, a plate-centre
score, the sub-cell offset of the centre and the plate's log width/height. Peaks of the heatmap
(3x3 local maxima) become boxes; a final IoU NMS merges duplicates from tiles and passes.

Frames of any size (720p to 4K) are handled by scale. The network is fully convolutional, so its
input is the resized frame padded to a multiple of 32, not a letterbox. The frame is shrunk so its
longest side fits ``max_side``; if that would make the smallest plate we promise to find
(``min_plate_px`` wide in frame pixels) narrower than the model sees reliably
(``entry["min_plate_input_px"]``), the frame is instead run at the scale that keeps such a plate
readable (a 4K frame: about 1344 x 756), split into overlapping ``tile_side`` tiles only when that
is still too large, plus a coarse pass when the biggest plate (``max_plate_px``) would outgrow the
model's range at that scale. A detail pass of 4K size runs only in windows around what the
same model proposes at half its scale (``proposals``; docs/detection.md "Proposals"), which
takes about 40% off a 4K frame's CPU time. Everything the preprocessing needs (normalisation, stride, size
multiple, plate-size range) is read from the model's manifest entry, so a retrained model cannot
silently disagree with this code.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

MODEL_NAME = "plate_detector"

DEFAULT_SCORE_THRESHOLD = 0.35
DEFAULT_MIN_PLATE_PX = 40
DEFAULT_MAX_PLATE_PX = 400
DEFAULT_TILE_SIDE = 1536
DEFAULT_NMS_IOU = 0.4
MAX_DETECTIONS = 50
DEFAULT_PROPOSAL_THRESHOLD = 0.25
PROPOSAL_SCALE = 0.5  # the proposal pass runs at this share of the detail pass's scale
# Proposals only where the detail pass is this big (model pixels; 4K at the default plate
# sizes): at 1080p they saved nothing and lost small plates (docs/detection.md "Proposals").
PROPOSALS_FROM_PX = 800_000
WINDOW_GROW = 4.0  # a detail window is this many times its proposal's width and height
MIN_WINDOW = 160  # model pixels: room for a plate the proposal saw too small to size well
MAX_WINDOW_SHARE = 0.5  # windows covering more of the frame than this: run the whole frame
_PEAK_WINDOW = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class Detection:
    """One plate found in a frame.

    ``box`` is (x, y, w, h) in frame pixels, clipped to the frame. ``corners`` is a 4x2 array
    (top-left, top-right, bottom-right, bottom-left) when the model gives the plate's
    quadrilateral for rectification; this model predicts axis-aligned boxes only, so it is None.
    """

    box: tuple[int, int, int, int]
    score: float
    corners: np.ndarray | None = None


def decode_heatmap(heat: np.ndarray, reg: np.ndarray, stride: int, score_threshold: float,
                   max_detections: int = MAX_DETECTIONS) -> list[tuple[float, float, float, float, float]]:
    """Turn one image's model output into boxes in model-input pixels.

    ``heat`` is (H, W) sigmoid scores; ``reg`` is (4, H, W): centre offset x, y (cells) and log
    width, log height (in cells). Returns ``(x0, y0, x1, y1, score)`` tuples, best first.
    Shared by the agent and the training script so validation measures the code that ships.
    """
    if heat.size == 0:
        return []
    # 3x3 maximum by a grey dilation (outside the map counts as no peak): one pass in C,
    # where nine shifted numpy copies took a millisecond of a 4K frame's budget
    local_max = cv2.dilate(np.ascontiguousarray(heat, dtype=np.float32), _PEAK_WINDOW)
    peaks = (heat >= local_max) & (heat >= score_threshold)
    ys, xs = np.nonzero(peaks)
    if ys.size == 0:
        return []
    scores = heat[ys, xs]
    order = np.argsort(-scores)[:max_detections]
    ys, xs, scores = ys[order], xs[order], scores[order]
    cx = (xs + reg[0, ys, xs]) * stride
    cy = (ys + reg[1, ys, xs]) * stride
    bw = np.exp(np.clip(reg[2, ys, xs], -4.0, 8.0)) * stride
    bh = np.exp(np.clip(reg[3, ys, xs], -4.0, 8.0)) * stride
    return [(float(x - ww / 2), float(y - hh / 2), float(x + ww / 2), float(y + hh / 2), float(s))
            for x, y, ww, hh, s in zip(cx, cy, bw, bh, scores)]


def iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between (N, 4) and (M, 4) boxes given as x0, y0, x1, y1."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


def nms(boxes: list[tuple[float, float, float, float, float]],
        iou_threshold: float = DEFAULT_NMS_IOU) -> list[tuple[float, float, float, float, float]]:
    """Greedy non-maximum suppression over ``(x0, y0, x1, y1, score)`` boxes, best first."""
    if not boxes:
        return []
    ordered = sorted(boxes, key=lambda b: -b[4])
    arr = np.array([b[:4] for b in ordered], dtype=np.float32)
    keep: list[int] = []
    suppressed = np.zeros(len(ordered), dtype=bool)
    ious = iou_xyxy(arr, arr)
    for i in range(len(ordered)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= ious[i] > iou_threshold
    return [ordered[i] for i in keep]


def prepare_input(image: np.ndarray, entry: dict, bgr: bool = False) -> np.ndarray:
    """Pad a uint8 image (already at model scale) to the size multiple, normalise, NCHW.

    ``image`` is RGB, or BGR with ``bgr=True`` (the planes are then taken in RGB order here,
    which saves the detector a colour conversion). Padding goes right/bottom with the
    normalised zero value so box coordinates need no shift. Each plane is split out (OpenCV,
    contiguous) and normalised straight from its uint8 pixels into its slot of the tensor: the
    same arithmetic, in the same order, as converting the whole image to float32 first, so the
    output is bit-identical, but no full-size float copy and no transposing copy are made, and
    no strided read of the interleaved pixels (at 4K scale this step went from about 17 to
    2 ms of CPU, and from 5 to 3.5 ms inside a frame's run with cold caches).
    """
    inp = entry["input"]
    multiple = int(inp.get("multiple", 32))
    h, w = image.shape[:2]
    ph = max(multiple, -(-h // multiple) * multiple)
    pw = max(multiple, -(-w // multiple) * multiple)
    mean = np.asarray(inp.get("mean", [0.5, 0.5, 0.5]), dtype=np.float32)
    std = np.asarray(inp.get("std", [0.25, 0.25, 0.25]), dtype=np.float32)
    scale = np.float32(1.0) / (np.float32(255.0) * std)
    shift = mean / std
    tensor = np.empty((1, 3, ph, pw), dtype=np.float32)
    tensor[0, :, h:, :] = 0.0  # 0 is the normalised padding value
    tensor[0, :, :h, w:] = 0.0
    planes = cv2.split(image)
    for channel, source in enumerate((2, 1, 0) if bgr else (0, 1, 2)):
        plane = tensor[0, channel, :h, :w]
        np.multiply(planes[source], scale[channel], out=plane, casting="unsafe")
        plane -= shift[channel]
    return tensor


@dataclass(frozen=True)
class Pass:
    """One run of the model over the frame: at ``scale``, whole or in tiles, or (``windows``)
    only in windows around the plates a cheap pass at half the scale proposes."""

    scale: float
    tiled: bool
    windows: bool = False


class PlateDetector:
    """Runs the plate-detector ONNX model on BGR frames (what OpenCV and cameras hand us)."""

    def __init__(self, session: Any, entry: dict, score_threshold: float | None = None,
                 min_plate_px: int = DEFAULT_MIN_PLATE_PX, max_plate_px: int = DEFAULT_MAX_PLATE_PX,
                 tile_side: int = DEFAULT_TILE_SIDE, nms_iou: float = DEFAULT_NMS_IOU,
                 proposals: bool = True,
                 proposal_threshold: float = DEFAULT_PROPOSAL_THRESHOLD) -> None:
        self.session = session
        self.entry = entry
        inp = entry.get("input")
        if not isinstance(inp, dict) or "max_side" not in inp:
            raise ValueError("plate_detector manifest entry has no 'input' object with "
                             "'max_side'; re-export the model with tools/train_detector.py")
        self.max_side = int(inp["max_side"])
        self.stride = int(entry.get("output", {}).get("stride", 4))
        self.min_plate_input_px = float(entry.get("min_plate_input_px", 14))
        self.max_plate_input_px = float(entry.get("max_plate_input_px", 200))
        if score_threshold is None:
            score_threshold = float(entry.get("score_threshold", DEFAULT_SCORE_THRESHOLD))
        self.score_threshold = float(score_threshold)
        self.min_plate_px = int(min_plate_px)
        self.max_plate_px = int(max_plate_px)
        self.tile_side = max(int(tile_side), self.max_side)
        self.nms_iou = float(nms_iou)
        self.proposals = bool(proposals)
        self.proposal_threshold = float(proposal_threshold)
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def from_models(cls, models_dir: Path, threads: int = 1, file_key: str = "file",
                    **kwargs: Any) -> "PlateDetector":
        """Load ``plate_detector`` from ``models_dir`` (sha256-checked, warmed up);
        ``file_key="file_fp32"`` loads the fp32 twin of an int8 model instead."""
        from agent.vision.models import open_session

        session, entry = open_session(Path(models_dir), MODEL_NAME, threads=threads,
                                      file_key=file_key)
        return cls(session, entry, **kwargs)

    def _run(self, image_bgr: np.ndarray, threshold: float | None = None
             ) -> list[tuple[float, float, float, float, float]]:
        """Model boxes for one BGR image at model scale, in that image's pixels."""
        tensor = prepare_input(image_bgr, self.entry, bgr=True)
        heat, reg = self.session.run(None, {self.input_name: tensor})
        return decode_heatmap(heat[0, 0], reg[0], self.stride,
                              self.score_threshold if threshold is None else threshold)

    def plan(self, height: int, width: int) -> list[Pass]:
        """The passes that cover a frame of this size (see the module docstring).

        One pass at the scale that fits ``max_side`` when that keeps a ``min_plate_px`` plate at
        least ``min_plate_input_px`` wide; otherwise a detail pass at the scale that does (tiled
        when the scaled frame is longer than ``tile_side``; with ``proposals``, only in windows
        around what a pass at half its scale proposes, when it is at least
        ``PROPOSALS_FROM_PX``). A coarse whole-frame pass is added
        when the largest plate the frame can hold (``max_plate_px``, or 90% of a small image's
        width) would be wider than ``max_plate_input_px`` at the first pass's scale.
        """
        longest = max(height, width)
        fit = min(1.0, self.max_side / longest)
        needed = min(1.0, self.min_plate_input_px / max(1, self.min_plate_px))
        if needed <= fit * 1.05:
            passes = [Pass(fit, tiled=False)]
        else:
            tiled = longest * needed > self.tile_side
            windows = (self.proposals and not tiled
                       and height * width * needed * needed >= PROPOSALS_FROM_PX)
            passes = [Pass(needed, tiled=tiled, windows=windows)]
        # the biggest plate this frame can hold, at the first pass's scale, may be too big for
        # the model (small images at full scale, or a fine detail pass): add a coarse pass
        biggest = min(self.max_plate_px, 0.9 * width)
        if biggest * passes[0].scale > self.max_plate_input_px:
            coarse = min(fit, 0.8 * self.max_plate_input_px / biggest)
            if coarse < passes[0].scale * 0.8:
                passes.append(Pass(coarse, tiled=False))
        return passes

    def plan_scales(self, height: int, width: int) -> tuple[float, float | None]:
        """(whole-frame scale, tiled detail scale or None): a summary of :meth:`plan`."""
        passes = self.plan(height, width)
        whole = [p.scale for p in passes if not p.tiled]
        tiled = [p.scale for p in passes if p.tiled]
        return (whole[0] if whole else min(1.0, self.max_side / max(height, width)),
                tiled[0] if tiled else None)

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        """Every plate found in ``frame_bgr`` (H x W x 3 uint8, BGR), best score first."""
        if not isinstance(frame_bgr, np.ndarray) or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            shape = getattr(frame_bgr, "shape", None)
            raise ValueError(f"detect() needs an H x W x 3 BGR image, got shape {shape}")
        if frame_bgr.dtype != np.uint8:
            raise ValueError(f"detect() needs a uint8 image, got dtype {frame_bgr.dtype}")
        height, width = frame_bgr.shape[:2]
        if height < 2 or width < 2:
            return []
        boxes: list[tuple[float, float, float, float, float]] = []
        for p in self.plan(height, width):
            if p.windows:
                boxes += self._pass_windows(frame_bgr, p.scale)
                continue
            # resize the BGR frame; prepare_input takes its planes in the model's RGB order
            small = self._resize(frame_bgr, p.scale)
            boxes += self._pass_tiles(small, p.scale) if p.tiled else self._pass_whole(small, p.scale)
        boxes = nms(boxes, self.nms_iou)
        return [self._to_detection(b, width, height) for b in boxes[:MAX_DETECTIONS]]

    @staticmethod
    def _resize(image: np.ndarray, scale: float) -> np.ndarray:
        """Shrink by ``scale``: halve by area averaging while the target is at most half the
        image (OpenCV's vectorised 2 x 2 path: no aliasing), then bilinear for the rest. A
        plain INTER_AREA to an arbitrary size costs ~35 ms on a 4K frame, and by a whole factor
        other than 2 still ~9 ms (the 4K proposal pass); this costs ~3-4 ms and looks the same
        to the model. An odd-sized image that cannot be halved is area-averaged directly."""
        if abs(scale - 1.0) < 1e-6:
            return image
        h, w = image.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        while (image.shape[1] >= 2 * size[0] and image.shape[0] >= 2 * size[1]
               and image.shape[1] % 2 == 0 and image.shape[0] % 2 == 0):
            image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2),
                               interpolation=cv2.INTER_AREA)
        if image.shape[1] == size[0] and image.shape[0] == size[1]:
            return image
        halving_left = image.shape[1] >= 2 * size[0] or image.shape[0] >= 2 * size[1]
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA if halving_left
                          else cv2.INTER_LINEAR)

    def _pass_whole(self, small: np.ndarray, scale: float) -> list[tuple[float, float, float, float, float]]:
        return [(x0 / scale, y0 / scale, x1 / scale, y1 / scale, s)
                for x0, y0, x1, y1, s in self._run(small)]

    def _pass_windows(self, frame_bgr: np.ndarray, scale: float
                      ) -> list[tuple[float, float, float, float, float]]:
        """The detail pass at ``scale``, run only where a pass at PROPOSAL_SCALE of that scale
        sees anything plate-like (score >= ``proposal_threshold``, far under the detection
        threshold): each proposal's box grown to a window (WINDOW_GROW times its size, at least
        MIN_WINDOW model pixels), overlapping windows merged, each cut from the frame and
        scaled. Why: at 4K the detail pass over the whole frame is most of the frame's time,
        and the plates it finds whose reads pass the cut are, at half the scale, still clear
        blobs (docs/detection.md "Proposals"). When the windows would cover more than
        MAX_WINDOW_SHARE of the frame, the whole frame is run instead."""
        height, width = frame_bgr.shape[:2]
        coarse = scale * PROPOSAL_SCALE
        windows = []
        for x0, y0, x1, y1, _ in self._run(self._resize(frame_bgr, coarse),
                                           self.proposal_threshold):
            cx, cy = (x0 + x1) / 2 / coarse, (y0 + y1) / 2 / coarse
            half_w = max(WINDOW_GROW * (x1 - x0) / coarse, MIN_WINDOW / scale) / 2
            half_h = max(WINDOW_GROW * (y1 - y0) / coarse, MIN_WINDOW / scale) / 2
            # even bounds, so that scaling the window takes _resize's halving path
            window = (max(0, _even(cx - half_w)), max(0, _even(cy - half_h)),
                      min(width, _even(cx + half_w + 2)), min(height, _even(cy + half_h + 2)))
            if window[2] - window[0] >= 2 and window[3] - window[1] >= 2:  # a centre decoded
                windows.append(window)  # past the frame's edge leaves nothing to run
        windows = _merge_overlapping(windows)
        if sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in windows) > \
                MAX_WINDOW_SHARE * width * height:
            return self._pass_whole(self._resize(frame_bgr, scale), scale)
        out: list[tuple[float, float, float, float, float]] = []
        for wx0, wy0, wx1, wy1 in windows:
            crop = self._resize(frame_bgr[wy0:wy1, wx0:wx1], scale)
            sx, sy = (wx1 - wx0) / crop.shape[1], (wy1 - wy0) / crop.shape[0]
            inner = (wx0 > 0, wy0 > 0, wx1 < width, wy1 < height)
            for x0, y0, x1, y1, s in _whole_boxes(self._run(crop), crop.shape, inner):
                out.append((wx0 + x0 * sx, wy0 + y0 * sy, wx0 + x1 * sx, wy0 + y1 * sy, s))
        return out

    def _pass_tiles(self, scaled: np.ndarray, scale: float) -> list[tuple[float, float, float, float, float]]:
        """Overlapping ``tile_side`` tiles of the scaled frame; boxes in frame pixels."""
        sh, sw = scaled.shape[:2]
        tile = self.tile_side
        overlap = int(self.max_plate_input_px)
        out: list[tuple[float, float, float, float, float]] = []
        for ty in _tile_starts(sh, tile, overlap):
            for tx in _tile_starts(sw, tile, overlap):
                crop = scaled[ty:ty + tile, tx:tx + tile]
                inner = (tx > 0, ty > 0, tx + tile < sw, ty + tile < sh)
                for x0, y0, x1, y1, s in _whole_boxes(self._run(crop), crop.shape, inner):
                    # a box cut by an inner tile edge is left to the neighbouring tile
                    out.append(((x0 + tx) / scale, (y0 + ty) / scale,
                                (x1 + tx) / scale, (y1 + ty) / scale, s))
        return out

    @staticmethod
    def _to_detection(box: tuple[float, float, float, float, float], width: int,
                      height: int) -> Detection:
        x0, y0, x1, y1, score = box
        x0 = int(round(min(max(x0, 0.0), width - 1)))
        y0 = int(round(min(max(y0, 0.0), height - 1)))
        x1 = int(round(min(max(x1, x0 + 1.0), width)))
        y1 = int(round(min(max(y1, y0 + 1.0), height)))
        return Detection(box=(x0, y0, x1 - x0, y1 - y0), score=score)


def _even(value: float) -> int:
    """The even integer at or below ``value``."""
    return int(value) // 2 * 2


def _whole_boxes(boxes: list[tuple[float, float, float, float, float]], shape: tuple[int, ...],
                 inner: tuple[bool, bool, bool, bool]
                 ) -> list[tuple[float, float, float, float, float]]:
    """The boxes of a part of the frame (a tile or a window, ``shape`` its size) that no inner
    edge cuts: a box touching its left, top, right or bottom edge where ``inner`` says that
    edge lies inside the frame is only part of a plate, which a neighbour sees whole."""
    left, top, right, bottom = inner
    h, w = shape[:2]
    return [b for b in boxes
            if not ((left and b[0] < 1) or (top and b[1] < 1)
                    or (right and b[2] > w - 1) or (bottom and b[3] > h - 1))]


def _merge_overlapping(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Replace boxes (x0, y0, x1, y1) that overlap by their union until none overlap."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    merged[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` with at least ``overlap``."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts
