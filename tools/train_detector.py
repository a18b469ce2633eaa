"""Train the plate detector (a small CenterNet-style heatmap model) and export it to ONNX.

Why this design (see docs/detection.md for the measurements):
- The unit has two CPU cores, so the model is a small fully-convolutional network whose output at
  stride 4 is a plate-centre heatmap plus centre offset and log box size: one pass, no anchors,
  no vehicle stage, cheap decoding (3x3 peak picking) and any input size (tiles for 4K).
- Training uses only the TRAINING sets of ../shared/datasets (open-images-plates, ro-dashcam,
  us-roboflow, kaggle-plates; their `split` field), optionally plus our own synthetic
  composites (tools/synth_composite.py). The eval-* sets are never read here.
- Training is on random 256x256 crops at random scales (plates 10-240 px wide), which is both
  the scale augmentation and what keeps a 1-thread CPU run to about an hour.
- Seeded and resumable: the sample stream depends only on (seed, step), and a checkpoint with
  the model, optimiser and step is written every ``--ckpt-every`` steps; ``--resume`` continues
  from it and gives the same result as an uninterrupted run.

Usage:
    nohup nice -n 10 .venv/bin/python tools/train_detector.py --out runs/det --steps 6000 \
        > runs/det/train.log 2>&1 &
    .venv/bin/python tools/train_detector.py --out runs/det --export-only   # export best.pt
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.resources import bundled_models_dir  # noqa: E402
from agent.vision.detector import iou_xyxy  # noqa: E402
from agent.vision.models import cpu_session, file_sha256  # noqa: E402
from tools.val_data import labels_file  # noqa: E402

log = logging.getLogger("train_detector")

DATASETS_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"
TRAINING_SETS = ("open-images-plates", "ro-dashcam", "us-roboflow", "kaggle-plates")
STRIDE = 4
CROP = 256
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
ATTRIBUTION = (
    "Licence-plate boxes and images from the Roboflow Universe datasets Google Licence Plates "
    "(aaaaaaaaaa-67qhw, via github.com/unknowncz/LP_recognition) and License Plates US EU "
    "(university-hksok, via github.com/conztantinee/thesis), both CC BY 4.0, derived from the "
    "Open Images Dataset (Google, annotations CC BY 4.0, images CC BY 2.0). Changed: merged and "
    "de-duplicated, re-encoded, resized, boxes converted. Also ro-dashcam (MIT, Copyright (c) "
    "2020 Robert Lucian Chiriac), us-roboflow (experiment-plates, Roboflow Universe "
    "platerecognition-7gchs, MIT), kaggle-plates (andrewmvd, Car License Plate Detection, "
    "Kaggle, CC0 1.0)."
)


@dataclass
class Sample:
    """One training or validation image: JPEG bytes in memory and its plate boxes (x, y, w, h)."""

    dataset: str
    path: str
    jpeg: np.ndarray
    boxes: np.ndarray  # (N, 4) float32 x, y, w, h
    extra: dict = field(default_factory=dict)

    def image(self) -> np.ndarray:
        img = cv2.imdecode(self.jpeg, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot decode {self.path}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_split(datasets_dir: Path, names: tuple[str, ...], split: str) -> list[Sample]:
    """All images of ``split`` from the named training sets (refuses eval-* sets)."""
    samples: list[Sample] = []
    for name in names:
        if name.startswith("eval-"):
            raise ValueError(f"{name} is an evaluation set: never train or select on it")
        folder = datasets_dir / name
        with open(labels_file(folder), encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if row["split"] != split:
                    continue
                path = folder / row["image"]
                boxes = np.array([p["box"] for p in row["plates"]], dtype=np.float32).reshape(-1, 4)
                samples.append(Sample(name, str(path), np.fromfile(path, dtype=np.uint8), boxes))
    return samples


def load_composites(folder: Path) -> list[Sample]:
    """Synthetic composites written by tools/synth_composite.py (labels.jsonl, same layout)."""
    samples: list[Sample] = []
    labels = folder / "labels.jsonl"
    if not labels.exists():
        return samples
    with open(labels, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            path = folder / row["image"]
            boxes = np.array([p["box"] for p in row["plates"]], dtype=np.float32).reshape(-1, 4)
            samples.append(Sample("synthetic", str(path), np.fromfile(path, dtype=np.uint8), boxes))
    return samples


# --------------------------------------------------------------------------- augmentation

def _affine_for(sample_boxes: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A 2x3 affine mapping the source image into a CROP x CROP training window."""
    widths = sample_boxes[:, 2] if len(sample_boxes) else np.zeros(0)
    usable = np.nonzero(widths >= 6)[0]
    if len(usable) and rng.random() < 0.65:
        i = int(rng.choice(usable))
        x, y, bw, bh = sample_boxes[i]
        target = math.exp(rng.uniform(math.log(12), math.log(240)))
        scale = float(np.clip(target / bw, 0.2, 3.0))
        cx, cy = x + bw / 2, y + bh / 2
        # put the plate centre anywhere inside the window, away from the very edge
        px = rng.uniform(0.15, 0.85) * CROP
        py = rng.uniform(0.15, 0.85) * CROP
    else:
        longest = max(h, w)
        scale = rng.uniform(200, 700) / longest
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        px, py = CROP / 2, CROP / 2
    angle = rng.normal(0, 4) if rng.random() < 0.5 else 0.0
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(angle), float(scale))
    if rng.random() < 0.3:  # mild shear, a plate seen from the side
        shear = rng.uniform(-0.15, 0.15)
        m[0, 1] += shear * scale
    m[0, 2] += px - cx
    m[1, 2] += py - cy
    if rng.random() < 0.5:  # horizontal flip
        m[0] = -m[0]
        m[0, 2] += CROP
    return m


def _photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = img.astype(np.float32)
    if rng.random() < 0.25:  # infrared night cameras give grey images
        grey = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        out = np.repeat(grey[..., None], 3, axis=2)
    else:
        out *= rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    contrast = rng.uniform(0.6, 1.4)
    bright = rng.uniform(-40, 40)
    out = (out - 128.0) * contrast + 128.0 + bright
    if rng.random() < 0.2:
        k = int(rng.choice([3, 5]))
        out = cv2.GaussianBlur(out, (k, k), 0)
    if rng.random() < 0.2:
        out += rng.normal(0, rng.uniform(2, 10), size=out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_training_pair(sample: Sample, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One augmented CROP x CROP image and its targets.

    Returns (image float32 3xHxW normalised, heat target 1xhxw, heat weight 1xhxw,
    reg target 4xhxw, reg mask 1xhxw). Plates too small or mostly cut off are masked out of
    the heatmap loss (neither positive nor negative) instead of being taught as background.
    """
    img = sample.image()
    h, w = img.shape[:2]
    m = _affine_for(sample.boxes, h, w, rng)
    border = tuple(int(v) for v in rng.integers(0, 255, size=3))
    warped = cv2.warpAffine(img, m, (CROP, CROP), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=border)
    warped = _photometric(warped, rng)
    oh = ow = CROP // STRIDE
    heat = np.zeros((oh, ow), dtype=np.float32)
    weight = np.ones((oh, ow), dtype=np.float32)
    reg = np.zeros((4, oh, ow), dtype=np.float32)
    mask = np.zeros((oh, ow), dtype=np.float32)
    gy, gx = np.mgrid[0:oh, 0:ow].astype(np.float32)
    for x, y, bw, bh in sample.boxes:
        corners = np.array([[x, y, 1], [x + bw, y, 1], [x + bw, y + bh, 1], [x, y + bh, 1]],
                           dtype=np.float32) @ m.T
        x0, y0 = corners.min(axis=0)
        x1, y1 = corners.max(axis=0)
        full_area = max((x1 - x0) * (y1 - y0), 1e-6)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, CROP), min(y1, CROP)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        visible = (cx1 - cx0) * (cy1 - cy0) / full_area
        iw, ih = cx1 - cx0, cy1 - cy0
        s0x, s0y = int(cx0 // STRIDE), int(cy0 // STRIDE)
        s1x, s1y = int(math.ceil(cx1 / STRIDE)), int(math.ceil(cy1 / STRIDE))
        if visible < 0.6 or iw < 6 or ih < 3:
            weight[s0y:s1y, s0x:s1x] = 0.0
            continue
        ccx, ccy = (cx0 + cx1) / 2 / STRIDE, (cy0 + cy1) / 2 / STRIDE
        ix, iy = min(int(ccx), ow - 1), min(int(ccy), oh - 1)
        sx, sy = max(0.35, iw / STRIDE / 5), max(0.35, ih / STRIDE / 5)
        g = np.exp(-((gx - ix) ** 2 / (2 * sx * sx) + (gy - iy) ** 2 / (2 * sy * sy)))
        np.maximum(heat, g, out=heat)
        heat[iy, ix] = 1.0
        reg[:, iy, ix] = (ccx - ix, ccy - iy, math.log(iw / STRIDE), math.log(ih / STRIDE))
        mask[iy, ix] = 1.0
    weight = np.maximum(weight, (heat >= 1.0).astype(np.float32))
    tensor = ((warped.astype(np.float32) / 255.0 - np.array(MEAN, np.float32))
              / np.array(STD, np.float32)).transpose(2, 0, 1)
    return tensor, heat[None], weight[None], reg, mask[None]


# --------------------------------------------------------------------------- model

ARCHS = ("base", "lite", "separable-head", "separable-head-s8")


def build_model(width: float = 1.0, arch: str = "base"):
    """The detector network: a light FPN-like encoder/decoder ending at stride 4.

    ``lite`` exists for 4K frames on one core: the 3x3 convolutions that run at stride 2 and 4
    (the stride-2 steps into stride 4 and 8, and the last 3x3 of the stride-4 head) become
    depthwise + pointwise pairs, the stride-4 DW block goes and the head is 24 channels wide
    instead of 32. Those layers held most of the multiply-adds and memory traffic: the model
    alone at 1344 x 768 takes about 28 ms CPU instead of 43 (docs/detection.md).

    ``separable-head`` changes only the last 3x3 of the stride-4 head (the model's costliest
    layer) into a depthwise + pointwise pair, and ``separable-head-s8`` also the step into
    stride 8, so everything else can start from the shipped model (``--init-from
    models/plate_detector.onnx``) while the layers that find small plates stay whole."""
    if arch not in ARCHS:
        raise ValueError(f"unknown detector architecture {arch!r} (one of {', '.join(ARCHS)})")
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class DWBlock(nn.Module):
        """Depthwise 3x3 + pointwise 1x1 with a residual: cheap capacity at low resolution."""

        def __init__(self, c: int) -> None:
            super().__init__()
            self.dw = cbr(c, c, 3, 1, groups=c)
            self.pw = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return F.relu(x + self.pw(self.dw(x)))

    def rnd(v: float) -> int:
        return max(8, int(round(v * width / 8)) * 8)

    def separable(cin: int, cout: int, s: int) -> nn.Sequential:
        return nn.Sequential(cbr(cin, cin, 3, s, groups=cin), cbr(cin, cout, 1))

    lite = arch == "lite"
    c = [rnd(16), rnd(32), rnd(48), rnd(96), rnd(160)]
    head_c = rnd(24 if lite else 32)

    class PlateNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s2 = cbr(3, c[0], 3, 2)
            if lite:
                self.s4 = nn.Sequential(separable(c[0], c[1], 2))
                self.s8 = nn.Sequential(separable(c[1], c[2], 2), DWBlock(c[2]), DWBlock(c[2]))
            else:
                self.s4 = nn.Sequential(cbr(c[0], c[1], 3, 2), DWBlock(c[1]))
                self.s8 = nn.Sequential(separable(c[1], c[2], 2) if arch == "separable-head-s8"
                                        else cbr(c[1], c[2], 3, 2), DWBlock(c[2]), DWBlock(c[2]))
            self.s16 = nn.Sequential(cbr(c[2], c[3], 3, 2), DWBlock(c[3]), DWBlock(c[3]),
                                     DWBlock(c[3]))
            self.s32 = nn.Sequential(cbr(c[3], c[4], 3, 2), DWBlock(c[4]), DWBlock(c[4]))
            self.l32 = cbr(c[4], head_c, 1)
            self.l16 = cbr(c[3], head_c, 1)
            self.l8 = cbr(c[2], head_c, 1)
            self.l4 = cbr(c[1], head_c, 1)
            self.m16 = DWBlock(head_c)
            self.m8 = DWBlock(head_c)
            self.m4 = nn.Sequential(DWBlock(head_c), separable(head_c, head_c, 1)
                                    if arch != "base"
                                    else cbr(head_c, head_c, 3))
            self.heat = nn.Conv2d(head_c, 1, 1)
            self.reg = nn.Conv2d(head_c, 4, 1)
            nn.init.constant_(self.heat.bias, -4.6)  # start near "no plate" (focal-loss prior)

        def forward(self, x):
            f4 = self.s4(self.s2(x))
            f8 = self.s8(f4)
            f16 = self.s16(f8)
            f32 = self.s32(f16)
            p = self.l32(f32)
            # x2 by a constant scale, not "to the size of f16": exported, a size read from
            # the tensor's shape keeps onnxruntime from running the upsampling in its blocked
            # (NCHWc) layout, which cost a quarter of the model's time (inputs are padded to a
            # multiple of 32, so x2 always meets the finer level exactly)
            p = self.m16(self.l16(f16) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
            p = self.m8(self.l8(f8) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
            p = self.m4(self.l4(f4) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
            return torch.sigmoid(self.heat(p)), self.reg(p)

    return PlateNet()


def detection_loss(heat_pred, reg_pred, heat_t, weight_t, reg_t, mask_t):
    """CenterNet focal loss on the heatmap (ignoring masked cells) + L1 on centre regressions."""
    import torch

    p = heat_pred.clamp(1e-4, 1 - 1e-4)
    pos = (heat_t >= 1.0).float()
    neg = (1 - pos) * weight_t
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p ** 2 * (1 - heat_t) ** 4 * neg
    n_pos = pos.sum().clamp(min=1.0)
    focal = -(pos_loss.sum() + neg_loss.sum()) / n_pos
    l1 = (torch.abs(reg_pred - reg_t) * mask_t).sum() / mask_t.sum().clamp(min=1.0)
    return focal + l1, focal.detach(), l1.detach()


class Teacher:
    """A shipped detector (ONNX, fp32) whose outputs a smaller network learns to copy.

    Why: the lite network (``--arch lite``) trained on the labels alone stayed below the
    model it replaces on the training val splits (docs/detection.md). The teacher's heatmap
    says more than the labels: how plate-like each cell is, plates the labels leave unboxed
    (Open Images boxes few small plates), and where its boxes sit. Run through onnxruntime on
    the same normalised training windows, one at a time (the model's batch is 1)."""

    def __init__(self, path: Path) -> None:
        self.session = cpu_session(path)
        self.input = self.session.get_inputs()[0].name

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(heat [N,1,h,w], reg [N,4,h,w]) for a normalised batch [N,3,H,W]."""
        heats, regs = zip(*(self.session.run(None, {self.input: one[None]}) for one in x))
        return np.concatenate(heats), np.concatenate(regs)


def distillation_loss(heat_pred, reg_pred, heat_teacher, reg_teacher, positive: float = 0.3):
    """KL divergence of the student's per-cell plate score from the teacher's (binary cross
    entropy less the teacher's own entropy, so a perfect copy costs 0), normalised by the
    teacher's plate cells; plus L1 on the regressions where the teacher sees a plate."""
    import torch

    p = heat_pred.clamp(1e-4, 1 - 1e-4)
    t = heat_teacher.clamp(1e-4, 1 - 1e-4)
    kl = t * torch.log(t / p) + (1 - t) * torch.log((1 - t) / (1 - p))
    plates = (heat_teacher >= positive).float()
    n = plates.sum().clamp(min=1.0)
    l1 = (torch.abs(reg_pred - reg_teacher) * plates).sum() / n
    return kl.sum() / n + l1


# --------------------------------------------------------------------------- validation

class TorchSession:
    """Presents the torch model with onnxruntime's session interface, so validation runs the
    shipped PlateDetector code (scaling, passes, decoding, NMS) on the model being trained."""

    class _Input:
        name = "image"

    def __init__(self, model) -> None:
        self.model = model

    def get_inputs(self):
        return [self._Input()]

    def run(self, _names, feeds):
        import torch

        with torch.no_grad():
            heat, reg = self.model(torch.from_numpy(feeds["image"]))
        return heat.numpy(), reg.numpy()


def detector_entry(max_side: int) -> dict:
    """The preprocessing part of the manifest entry (shared by validation and export)."""
    return {"input": {"name": "image", "layout": "NCHW", "channels": "RGB", "dtype": "float32",
                      "max_side": max_side, "multiple": 32, "mean": list(MEAN), "std": list(STD),
                      "scale": "1/255 then (x - mean) / std; pad right/bottom with 0 after "
                               "normalising"},
            "output": {"heat": "1x1xH/4xW/4 sigmoid plate-centre score",
                       "reg": "1x4xH/4xW/4: centre offset x, y (cells), log width, log height "
                              "(cells)",
                       "stride": STRIDE},
            "min_plate_input_px": 14, "max_plate_input_px": 200}


def predict_boxes(model, rgb: np.ndarray, max_side: int, threshold: float):
    """PlateDetector.detect on the torch model: (x0, y0, x1, y1, score) in image pixels."""
    from agent.vision.detector import PlateDetector

    detector = PlateDetector(TorchSession(model), detector_entry(max_side),
                             score_threshold=threshold)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    return [(x, y, x + w, y + h, d.score) for d in detector.detect(bgr) for x, y, w, h in [d.box]]


def match_stats(preds, gt_xywh: np.ndarray, iou_thr: float = 0.5, min_gt_w: float = 16.0):
    """(matched, counted GT, true-positive preds, preds) for one image.

    GT narrower than ``min_gt_w`` is not counted for recall (the product promises 40 px and up
    in frame; Open Images leaves many tiny plates unboxed anyway) but a prediction on one is
    not a false positive either.
    """
    gt = np.array([[x, y, x + w, y + h] for x, y, w, h in gt_xywh], dtype=np.float32).reshape(-1, 4)
    counted = gt_xywh[:, 2] >= min_gt_w if len(gt_xywh) else np.zeros(0, bool)
    pb = np.array([p[:4] for p in preds], dtype=np.float32).reshape(-1, 4)
    ious = iou_xyxy(gt, pb)
    matched = 0
    used = set()
    for gi in np.argsort(-gt_xywh[:, 2]) if len(gt_xywh) else []:
        if not counted[gi]:
            continue
        cands = [j for j in np.argsort(-ious[gi]) if ious[gi, j] >= iou_thr and j not in used]
        if cands:
            used.add(cands[0])
            matched += 1
    tp = int((ious.max(axis=0) >= 0.3).sum()) if ious.size else 0
    return matched, int(counted.sum()), tp, len(preds)


def validate(model, samples: list[Sample], max_side: int, thresholds=(0.2, 0.3, 0.4, 0.5)):
    """Recall (IoU >= 0.5, plates >= 16 px) and precision per threshold, overall and per set."""
    model.eval()
    results: dict = {}
    per_image = []
    lowest = min(thresholds)
    for s in samples:
        per_image.append((s.dataset, s.boxes, predict_boxes(model, s.image(), max_side, lowest)))
    for thr in thresholds:
        agg: dict[str, list[int]] = {}
        for ds, boxes, preds in per_image:
            kept = [p for p in preds if p[4] >= thr]
            m, n, tp, np_ = match_stats(kept, boxes)
            for key in (ds, "all"):
                a = agg.setdefault(key, [0, 0, 0, 0])
                a[0] += m; a[1] += n; a[2] += tp; a[3] += np_
        results[str(thr)] = {k: {"recall": round(v[0] / max(v[1], 1), 4),
                                 "precision": round(v[2] / max(v[3], 1), 4),
                                 "plates": v[1], "detections": v[3]} for k, v in agg.items()}
    train_mode(model)
    return results


def train_only(model, prefixes: list[str]) -> int:
    """Train only the parameters under these module prefixes (``m4 heat reg``); the rest keep
    their weights, and their batch norms their statistics (``train_mode``). Why: a network
    started from the shipped one with one layer swapped (``--arch separable-head``) first
    teaches the new layer to stand in for the old, without moving the layers around it that
    the shipped model's small-plate recall rests on. Returns the trainable parameter count."""
    import torch.nn as nn

    def chosen(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    count = 0
    for name, param in model.named_parameters():
        param.requires_grad_(chosen(name.rsplit(".", 1)[0]))
        count += param.numel() if param.requires_grad else 0
    if count == 0:
        raise ValueError(f"--train-only {' '.join(prefixes)}: no layer of the network has "
                         "that name (top-level names: "
                         + ", ".join(n for n, _ in model.named_children()) + ")")
    model.frozen_norms = [m for name, m in model.named_modules()
                          if isinstance(m, nn.BatchNorm2d) and not chosen(name)]
    train_mode(model)
    return count


def train_mode(model) -> None:
    """``model.train()``, except the batch norms ``train_only`` froze stay in eval mode."""
    model.train()
    for norm in getattr(model, "frozen_norms", ()):
        norm.eval()


def init_weights(model, source: Path, train: list[Sample], seed: int) -> None:
    """Start ``model`` from a checkpoint (``best.pt``) or from a detector ONNX file.

    From ONNX, every convolution whose name and shape match is loaded with its batch norm
    re-derived on 32 training windows (tools/onnx_init.py); a layer that ``--arch`` changed
    keeps its fresh weights and is named in the log, so a fine-tune that swaps one layer
    starts from the shipped network everywhere else."""
    import torch

    if source.suffix != ".onnx":
        init = torch.load(source, map_location="cpu", weights_only=False)
        model.load_state_dict(init["model"])
        log.info("initialised from %s (step %s)", source, init.get("step"))
        return
    from tools.onnx_init import load_folded_convs, onnx_convs

    rng = np.random.default_rng([seed, 1 << 20])
    windows = [make_training_pair(train[int(rng.integers(len(train)))], rng)[0]
               for _ in range(32)]
    fresh = load_folded_convs(model, onnx_convs(source), torch.from_numpy(np.stack(windows)))
    log.info("initialised from %s; layers that start fresh: %s", source,
             ", ".join(fresh) if fresh else "none")


# --------------------------------------------------------------------------- export

def export_onnx(model, out_path: Path, max_side: int, score_threshold: float, meta: dict,
                models_dir: Path | None) -> dict:
    """Write the ONNX file (opset 17, dynamic height/width) and its manifest entry."""
    import torch

    out_path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    dummy = torch.zeros(1, 3, 256, 320)
    torch.onnx.export(model, dummy, str(out_path), input_names=["image"],
                      output_names=["heat", "reg"], opset_version=17, dynamo=False,
                      dynamic_axes={"image": {2: "height", 3: "width"},
                                    "heat": {2: "out_height", 3: "out_width"},
                                    "reg": {2: "out_height", 3: "out_width"}})
    from agent.vision.models import update_manifest_entry

    entry = detector_entry(max_side)
    entry.update({
        "file": out_path.name,
        "sha256": file_sha256(out_path),
        "task": "plate detection (centre heatmap, stride 4)",
        "version": meta.get("version", "1"),
        "score_threshold": score_threshold,
        "trained_on": "open-images-plates, ro-dashcam, us-roboflow, kaggle-plates (train splits)"
                      + (" + synthetic composites (tools/synth_composite.py)"
                         if meta.get("synthetic") else ""),
        "attribution": ATTRIBUTION,
        "training": meta,
    })
    if models_dir is not None:
        update_manifest_entry(models_dir, "plate_detector", entry)
    return entry


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/det"), help="run folder")
    parser.add_argument("--datasets", type=Path, default=DATASETS_DIR, help="datasets folder")
    parser.add_argument("--synthetic", type=Path, default=None,
                        help="folder of synthetic composites (labels.jsonl) to mix in")
    parser.add_argument("--synthetic-fraction", type=float, default=0.25,
                        help="share of training samples drawn from the synthetic composites")
    parser.add_argument("--steps", type=int, default=6000, help="training steps")
    parser.add_argument("--batch", type=int, default=16, help="batch size")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    parser.add_argument("--arch", choices=ARCHS, default="base",
                        help="network: base (the first model), lite (cheaper at stride 2-4, "
                             "for 4K frames on one core), separable-head (base with the stride-4 "
                             "head's last 3x3 separable) or separable-head-s8 (also the step "
                             "into stride 8)")
    parser.add_argument("--seed", type=int, default=6, help="random seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--ckpt-every", type=int, default=250, help="checkpoint interval (steps)")
    parser.add_argument("--val-every", type=int, default=1000, help="validation interval (steps)")
    parser.add_argument("--max-side", type=int, default=512,
                        help="longest side the frame is resized to at inference")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="an fp32 detector ONNX file whose outputs the network also learns "
                             "to copy (distillation; e.g. the shipped models/plate_detector.onnx)")
    parser.add_argument("--teacher-weight", type=float, default=1.0,
                        help="weight of the distillation loss next to the label loss")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start from the weights of this checkpoint, or of a detector ONNX "
                             "file such as models/plate_detector.onnx (fresh optimiser and "
                             "schedule): fine-tuning, e.g. with synthetic composites added or "
                             "one layer changed by --arch")
    parser.add_argument("--train-only", nargs="+", default=None, metavar="LAYER",
                        help="train only these layers (module names such as m4 heat reg); the "
                             "rest keep the --init-from weights")
    parser.add_argument("--export-only", action="store_true",
                        help="only export OUT/best.pt to ONNX and the manifest")
    parser.add_argument("--models-dir", type=Path, default=bundled_models_dir(),
                        help="where the ONNX file and manifest entry go")
    parser.add_argument("--version", default=None,
                        help="the model version the manifest entry gets (e.g. 1.1.0)")
    parser.add_argument("--time-limit", type=float, default=0,
                        help="stop (after a checkpoint) once this many minutes have passed; 0 = off")
    args = parser.parse_args(argv)
    if args.teacher is not None and not args.teacher.is_file():
        parser.error(f"--teacher {args.teacher}: no such file (an fp32 detector ONNX file, "
                     "e.g. models/plate_detector.onnx)")
    if args.init_from is not None and not args.init_from.is_file():
        parser.error(f"--init-from {args.init_from}: no such file (a run's best.pt or a "
                     "detector ONNX file)")
    if args.export_only and not (args.out / "best.pt").is_file():
        parser.error(f"--export-only: {args.out / 'best.pt'} does not exist (--out names the "
                     "run folder a training run wrote)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.export_only:
        ckpt = torch.load(args.out / "best.pt", map_location="cpu", weights_only=False)
        meta = ckpt.get("meta", {})
        model = build_model(meta.get("width", args.width), meta.get("arch", "base"))
        model.load_state_dict(ckpt["model"])
        thr = float(ckpt.get("threshold", 0.3))
        if args.version:
            meta["version"] = args.version
        entry = export_onnx(model, args.models_dir / "plate_detector.onnx", args.max_side, thr,
                            meta, args.models_dir)
        log.info("exported %s sha256=%s", entry["file"], entry["sha256"])
        return 0

    model = build_model(args.width, args.arch)
    if args.train_only:
        try:
            log.info("training only %s: %d parameters", " ".join(args.train_only),
                     train_only(model, args.train_only))
        except ValueError as exc:
            parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)

    train = load_split(args.datasets, TRAINING_SETS, "train")
    val = load_split(args.datasets, TRAINING_SETS, "val")
    synth = load_composites(args.synthetic) if args.synthetic else []
    teacher = Teacher(args.teacher) if args.teacher else None
    log.info("train=%d val=%d synthetic=%d", len(train), len(val), len(synth))

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                            weight_decay=5e-4)
    warmup = min(300, args.steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    start = 0
    best = {"score": -1.0}
    history: list = []
    if args.init_from is not None and not (args.resume and (args.out / "last.pt").exists()):
        init_weights(model, args.init_from, train, args.seed)
    if args.resume and (args.out / "last.pt").exists():
        ckpt = torch.load(args.out / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        start = ckpt["step"]
        best = ckpt.get("best", best)
        history = ckpt.get("history", [])
        log.info("resumed at step %d", start)

    meta = {"arch": args.arch, "steps": args.steps, "batch": args.batch, "lr": args.lr,
            "width": args.width,
            "seed": args.seed, "crop": CROP, "synthetic": bool(synth),
            "train_images": len(train), "synthetic_images": len(synth),
            "init_from": str(args.init_from) if args.init_from else None,
            **({"version": args.version} if args.version else {}),
            **({"train_only": args.train_only} if args.train_only else {}),
            "teacher": (f"{args.teacher.name} sha256 {file_sha256(args.teacher)[:12]}, weight "
                        f"{args.teacher_weight}") if args.teacher else None}

    def save(step: int) -> None:
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                 "best": best, "history": history, "meta": meta}
        tmp = args.out / "last.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, args.out / "last.pt")

    def run_validation(step: int) -> None:
        t0 = time.time()
        res = validate(model, val, args.max_side)
        # model selection: best F1 over thresholds on the training sets' val splits
        scored = []
        for thr, r in res.items():
            a = r["all"]
            f1 = 2 * a["recall"] * a["precision"] / max(a["recall"] + a["precision"], 1e-9)
            scored.append((f1, float(thr)))
        f1, thr = max(scored)
        history.append({"step": step, "f1": round(f1, 4), "threshold": thr, "val": res})
        log.info("val step=%d f1=%.4f thr=%.2f all=%s (%.0fs)", step, f1, thr,
                 res[str(thr)]["all"], time.time() - t0)
        with open(args.out / "val.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(history[-1]) + "\n")
        if f1 > best["score"]:
            best.update(score=f1, step=step, threshold=thr)
            torch.save({"model": model.state_dict(), "meta": meta, "threshold": thr,
                        "val": res, "step": step}, args.out / "best.pt")

    train_mode(model)
    t_start = time.time()
    t_log = time.time()
    for step in range(start, args.steps):
        rng = np.random.default_rng([args.seed, step])
        batch = []
        for _ in range(args.batch):
            if synth and rng.random() < args.synthetic_fraction:
                s = synth[int(rng.integers(len(synth)))]
            else:
                s = train[int(rng.integers(len(train)))]
            batch.append(make_training_pair(s, rng))
        x, heat_t, weight_t, reg_t, mask_t = (torch.from_numpy(np.stack(parts))
                                              for parts in zip(*batch))
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        heat_p, reg_p = model(x)
        loss, focal, l1 = detection_loss(heat_p, reg_p, heat_t, weight_t, reg_t, mask_t)
        if teacher is not None:
            t_heat, t_reg = (torch.from_numpy(a) for a in teacher.outputs(x.numpy()))
            loss = loss + args.teacher_weight * distillation_loss(heat_p, reg_p, t_heat, t_reg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        done = step + 1
        if done % 25 == 0:
            rate = (time.time() - t_log) / 25
            t_log = time.time()
            log.info("step=%d loss=%.4f focal=%.4f l1=%.4f lr=%.5f s/step=%.2f", done,
                     loss.item(), focal.item(), l1.item(), lr_at(step), rate)
        if done % args.val_every == 0 or done == args.steps:
            run_validation(done)
        if done % args.ckpt_every == 0 or done == args.steps:
            save(done)
        if args.time_limit and (time.time() - t_start) / 60 > args.time_limit:
            save(done)
            log.info("time limit reached at step %d; resume with --resume", done)
            return 0
    log.info("best step=%s f1=%.4f threshold=%s", best.get("step"), best["score"],
             best.get("threshold"))
    ckpt = torch.load(args.out / "best.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["model"])
    entry = export_onnx(model, args.models_dir / "plate_detector.onnx", args.max_side,
                        float(ckpt["threshold"]), meta, args.models_dir)
    log.info("exported %s sha256=%s", entry["file"], entry["sha256"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
