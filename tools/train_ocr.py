"""Train the plate OCR (tools/ocr_net.py) on synthetic plates + the real TRAINING crops.

    nohup nice -n 10 .venv/bin/python tools/train_ocr.py --out runs/ocr > runs/ocr/train.log 2>&1 &

Data (see ../shared/datasets/README.md): our synthetic set (tools/synth, pre-generated .npz),
plate-text train split and ar-crops train split (augmented on the fly). Model selection uses
plate-text val + ar-crops val + a synthetic val set only; the eval-* sets are never read here.
Seeded (every batch is drawn from ``default_rng([seed, step])``) and resumable: rerunning the
same command continues from ``OUT/last.pt``. Writes ``OUT/curves.jsonl``, ``OUT/curves.png``,
``OUT/metrics.json`` and ``OUT/best.pt``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.vision.crops import OCR_INPUT_HEIGHT, OCR_INPUT_WIDTH, to_model_input  # noqa: E402
from agent.vision.plate_formats import CHARSET  # noqa: E402
from tools.ocr_net import ARCHS, build, load_weights  # noqa: E402
from tools.ocr_onnx_init import check_arch, init_from_onnx  # noqa: E402
from tools.synth.camera import roadside_crop  # noqa: E402
from tools.val_data import EvaluationSetError, refuse_evaluation_set, training_crops  # noqa: E402

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
TRAINING_SETS = ("plate-text", "ar-crops")  # the README's TRAINING sets with text


def encode(text: str) -> list[int]:
    return [CHARSET.index(c) + 1 for c in text]


def greedy(probs: np.ndarray) -> list[str]:
    """Best-path CTC decoding of [N, T, C] probabilities."""
    out = []
    for row in probs.argmax(-1):
        chars, prev = [], 0
        for k in row:
            if k != prev and k != 0:
                chars.append(CHARSET[k - 1])
            prev = k
        out.append("".join(chars))
    return out


def load_real(split: str, datasets: Path, one_row_only: bool = True):
    """Grey crops + texts of the TRAINING text sets for ``split`` (train/val)."""
    images, texts, names = [], [], []
    for name in TRAINING_SETS:
        labels = datasets / name / "labels.jsonl"
        for line in labels.read_text().splitlines():
            row = json.loads(line)
            if row["split"] != split:
                continue
            text = (row["plates"][0].get("text") or "")
            if not text or any(c not in CHARSET for c in text) or len(text) > 12:
                continue
            if one_row_only and row.get("layout") == "two_rows":
                continue
            if name == "ar-crops" and len(text) == 7 and text[0].isalpha() and text[1].isdigit():
                continue  # two-line motorcycle plates (e.g. A035HFA)
            img = cv2.imread(str(datasets / name / row["image"]), cv2.IMREAD_GRAYSCALE)
            if img is None:
                continue
            images.append(img)
            texts.append(text)
            names.append(name)
    return images, texts, names


def augment_real(img: np.ndarray, rng: np.random.Generator, roadside_share: float = 0.0
                 ) -> np.ndarray:
    """Camera-like variation of one real crop, then the model input size (uint8).

    ``roadside_share`` of the crops also get the roadside camera effects (tools/synth/camera.py:
    blur up to 12 px at any angle, rolling shutter, IR night, low light) at a roadside plate's
    sensor size; 0 draws exactly what earlier runs drew."""
    if roadside_share and rng.random() < roadside_share:
        img = roadside_crop(img, rng)
    h, w = img.shape
    # Re-crop: up to 6% tighter or 6% looser on each side, like detector boxes vary.
    l, r = rng.uniform(-0.06, 0.06, 2) * w
    t, b = rng.uniform(-0.08, 0.08, 2) * h
    ang = rng.normal(0, 2.0)
    src = np.float32([[l, t], [w - r, t], [w - r, h - b]])
    dst = np.float32([[0, 0], [w, 0], [w, h]])
    M = cv2.getAffineTransform(src, dst)
    R = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
    M = R @ np.vstack([M, [0, 0, 1]])
    img = cv2.warpAffine(img, M, (w, h), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.4:  # lower resolution
        tw = int(rng.uniform(min(50, w), w))
        th = max(8, int(h * tw / w))
        img = cv2.resize(cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA), (w, h))
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2))
    f = img.astype(np.float32) / 255.0
    f = np.clip(f, 0, 1) ** np.exp(rng.normal(0, 0.25))
    f = (f - 0.5) * rng.uniform(0.6, 1.2) + 0.5 + rng.normal(0, 0.06)
    if rng.random() < 0.3:
        f = f + rng.normal(0, rng.uniform(0.01, 0.05), f.shape)
    if rng.random() < 0.03:
        f = 1.0 - f  # the odd inverted plate (light characters on dark)
    img = np.clip(f * 255, 0, 255).astype(np.uint8)
    return cv2.resize(img, (OCR_INPUT_WIDTH, OCR_INPUT_HEIGHT), interpolation=cv2.INTER_AREA)


def augment_synth(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small extra jitter on a pre-generated synthetic sample (already degraded)."""
    if rng.random() < 0.5:
        return img
    h, w = img.shape
    M = cv2.getRotationMatrix2D((w / 2 + rng.normal(0, 2), h / 2 + rng.normal(0, 1)),
                                rng.normal(0, 1.0), rng.uniform(0.95, 1.05))
    return cv2.warpAffine(img, M, (w, h), borderMode=cv2.BORDER_REPLICATE)


def make_batch(step, seed, synth_x, synth_t, real_x, real_t, batch, real_share,
               roadside_share: float = 0.0):
    rng = np.random.default_rng([seed, step])
    n_real = int(round(batch * real_share)) if real_x else 0
    imgs, texts = [], []
    for i in rng.integers(0, len(synth_x), batch - n_real):
        imgs.append(augment_synth(synth_x[i], rng))
        texts.append(str(synth_t[i]))
    for i in rng.integers(0, len(real_x), n_real):
        imgs.append(augment_real(real_x[i], rng, roadside_share))
        texts.append(real_t[i])
    x = torch.from_numpy(np.stack(imgs).astype(np.float32)[:, None])
    targets = torch.tensor([k for t in texts for k in encode(t)], dtype=torch.long)
    lengths = torch.tensor([len(t) for t in texts], dtype=torch.long)
    return x, targets, lengths


def evaluate(model, images: np.ndarray, texts: list[str], batch: int = 128) -> float:
    """Exact-match rate of best-path reads; leaves the model in the mode it came in (the
    weight average is never trained, the live model goes back to training)."""
    was_training = model.training
    model.eval()
    hits = 0
    with torch.no_grad():
        for a in range(0, len(images), batch):
            x = torch.from_numpy(images[a:a + batch].astype(np.float32)[:, None])
            pred = greedy(model(x).numpy())
            hits += sum(p == t for p, t in zip(pred, texts[a:a + batch]))
    model.train(was_training)
    return hits / max(len(texts), 1)


class WeightAverage:
    """Exponential moving average of a model's weights (BatchNorm statistics copied as they are).

    Single checkpoints of this CTC model swing by several points on the 249 plate-text val crops
    from one validation to the next; the average of the last few thousand steps is steadier and
    usually better, so it is what gets validated, selected and exported."""

    def __init__(self, model: torch.nn.Module, decay: float, state: dict | None = None):
        self.decay = decay
        self.model = copy.deepcopy(model)
        if state is not None:
            self.model.load_state_dict(state)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for mine, theirs in zip(self.model.parameters(), model.parameters()):
            mine.lerp_(theirs, 1.0 - self.decay)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)


def lr_at(step: int, steps: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def draw_curves(rows: list[dict], path: Path) -> None:
    """A plain PNG of the loss and validation accuracies (no plotting library needed)."""
    H, W, pad = 360, 640, 40
    img = np.full((H, W, 3), 255, np.uint8)
    steps = [r["step"] for r in rows]
    if not steps:
        return
    s_max = max(steps) or 1

    def pt(s, v):
        return int(pad + (W - 2 * pad) * s / s_max), int(H - pad - (H - 2 * pad) * v)

    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    l_max = max((v for _, v in losses), default=1.0) or 1.0
    series = [([(s, v / l_max) for s, v in losses], (0, 0, 0), "loss/max")]
    for key, col in (("val_plate_text", (0, 0, 220)), ("val_synth", (0, 160, 0)),
                     ("val_ar", (200, 100, 0))):
        series.append(([(r["step"], r[key]) for r in rows if key in r], col, key))
    for k, (pts, col, name) in enumerate(series):
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, pt(*a), pt(*b), col, 1, cv2.LINE_AA)
        cv2.putText(img, name, (pad + 150 * k, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, col, 1)
    cv2.rectangle(img, (pad, pad), (W - pad, H - pad), (150, 150, 150), 1)
    cv2.imwrite(str(path), img)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the plate OCR model (CTC).")
    p.add_argument("--out", type=Path, default=Path("runs/ocr"), help="run folder")
    p.add_argument("--synth", type=Path, nargs="+", default=[Path("data/synth_train_s1.npz")],
                   help="pre-generated synthetic training sets (.npz from tools.synth.generate)")
    p.add_argument("--synth-val", type=Path, default=Path("data/synth_val_s2.npz"),
                   help="synthetic validation set (.npz, a different seed)")
    p.add_argument("--datasets", type=Path, default=DATASETS, help="shared datasets folder")
    p.add_argument("--steps", type=int, default=4000, help="optimizer steps")
    p.add_argument("--batch", type=int, default=64, help="batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--real-share", type=float, default=0.3, help="share of real crops per batch")
    p.add_argument("--real-crops", type=Path, nargs="*", default=[],
                   help="crops sets made from TRAINING data to add to the real crops (e.g. the "
                        "detector's crops of the train scenes: tools/framed_val.py --split train "
                        "--save DIR); an eval-* set is refused")
    p.add_argument("--roadside-real", type=float, default=0.0,
                   help="share of real crops given the roadside camera effects (blur up to "
                        "12 px at any angle, rolling shutter, IR night, low light); 0 = none")
    p.add_argument("--seed", type=int, default=1, help="seed of batches and weights")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--eval-every", type=int, default=250, help="validate every N steps")
    p.add_argument("--time-limit", type=float, default=0,
                   help="minutes after which to stop cleanly (0: none); resumable later")
    p.add_argument("--init", type=Path,
                   help="start from these weights (fine-tuning): a checkpoint (.pt), or a "
                        "shipped model (.onnx, e.g. models/plate_ocr_fp32.onnx; its folded "
                        "batch norms are re-derived on training batches, tools/ocr_onnx_init.py)")
    p.add_argument("--arch", choices=sorted(ARCHS), default="base",
                   help="network size (tools/ocr_net.py ARCHS); kept in the checkpoints")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: autocast the forward pass (about 1.8x faster on CPUs with "
                        "AMX/AVX512-BF16; weights and the CTC loss stay fp32)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="keep an exponential moving average of the weights with this decay "
                        "(e.g. 0.999) and validate, select and save it (0: off)")
    args = p.parse_args(argv)
    try:
        for folder in args.real_crops:
            refuse_evaluation_set(folder)
    except EvaluationSetError as exc:
        p.error(str(exc))
    if args.init and args.init.suffix == ".onnx":
        try:  # before the synthetic sets are loaded: a wrong file must not cost minutes
            check_arch(args.init, args.arch)
        except ValueError as exc:
            p.error(f"--init {exc}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cv2.setNumThreads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    sx, st = [], []
    for f in args.synth:
        d = np.load(f)
        sx.append(d["images"])
        st.extend(d["texts"].tolist())
    synth_x = np.concatenate(sx)
    synth_t = st
    real_x, real_t, _ = load_real("train", args.datasets)
    for folder in args.real_crops:
        extra_x, extra_t = training_crops(folder)  # refuses an eval-* set
        real_x, real_t = list(real_x) + extra_x, list(real_t) + extra_t
    val_x, val_t, val_names = load_real("val", args.datasets)
    val_imgs = np.stack([to_model_input(v)[0, 0] for v in val_x])
    pt_idx = [i for i, n in enumerate(val_names) if n == "plate-text"]
    ar_idx = [i for i, n in enumerate(val_names) if n == "ar-crops"]
    sv = np.load(args.synth_val)
    sval_x, sval_t = sv["images"][:1500], sv["texts"][:1500].tolist()
    print(json.dumps({"synthetic": len(synth_t), "real_train": len(real_t),
                      "val_plate_text": len(pt_idx), "val_ar": len(ar_idx),
                      "val_synth": len(sval_t)}), flush=True)

    model = build(args.arch)
    if args.init and args.init.suffix == ".onnx":
        # Eight training batches (those of steps 0-7, which the stage then trains on anyway).
        samples = torch.cat([make_batch(k, args.seed, synth_x, synth_t, real_x, real_t,
                                        args.batch, args.real_share, args.roadside_real)[0]
                             for k in range(8)])
        gap = init_from_onnx(model, args.arch, args.init, samples)
        print(json.dumps({"init_from_onnx": str(args.init), "largest_probability_gap": gap}),
              flush=True)
    elif args.init:
        load_weights(model, args.arch, torch.load(args.init, map_location="cpu"), args.init)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    step, best = 0, {"score": -1.0}
    last = args.out / "last.pt"
    ema_state = None
    if last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        load_weights(model, args.arch, ck, last)
        opt.load_state_dict(ck["opt"])
        step, best = ck["step"], ck["best"]
        ema_state = ck.get("ema")
        print(f"resumed step={step} best={best}", flush=True)
    ema = WeightAverage(model, args.ema, ema_state) if args.ema else None
    judged = ema.model if ema else model  # the weights that are validated and kept
    curves_path = args.out / "curves.jsonl"
    rows = [json.loads(x) for x in curves_path.read_text().splitlines()] \
        if curves_path.exists() and step else []
    rows = [r for r in rows if r["step"] <= step]

    def validate(row: dict, best: dict) -> dict:
        """Score the judged weights into ``row``; save them as best.pt if they beat ``best``."""
        row["val_plate_text"] = evaluate(judged, val_imgs[pt_idx], [val_t[i] for i in pt_idx])
        row["val_ar"] = evaluate(judged, val_imgs[ar_idx], [val_t[i] for i in ar_idx])
        row["val_synth"] = evaluate(judged, sval_x, sval_t)
        # Selection: real plate-text val first, synthetic val as a tie-breaker.
        score = row["val_plate_text"] + 0.1 * row["val_ar"] + 0.2 * row["val_synth"]
        if score <= best["score"]:
            return best
        best = {"score": score, "step": row["step"], **{k: row[k] for k in
                ("val_plate_text", "val_ar", "val_synth")}}
        torch.save({"model": judged.state_dict(), "arch": args.arch, "step": row["step"],
                    "metrics": best, "ema_decay": args.ema}, args.out / "best.pt")
        return best

    def record(row: dict) -> None:
        """One curves row: kept for the plot, printed, appended to curves.jsonl."""
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(curves_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    if args.init and step == 0:
        # The starting weights are the bar: a fine-tuning stage whose best.pt is still step 0
        # did not beat what it started from on the same score.
        row = {"step": 0}
        best = validate(row, best)
        record(row)
    t0 = time.monotonic()
    model.train()
    run_loss, n_loss = 0.0, 0
    while step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        x, targets, lengths = make_batch(step, args.seed, synth_x, synth_t, real_x, real_t,
                                         args.batch, args.real_share, args.roadside_real)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = model.logits(x)
        logp = logits.float().log_softmax(-1).permute(1, 0, 2)
        in_len = torch.full((x.shape[0],), logp.shape[0], dtype=torch.long)
        loss = ctc(logp, targets, in_len, lengths)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if ema:
            ema.update(model)
        step += 1
        run_loss += loss.item()
        n_loss += 1
        if step % 50 == 0:
            row = {"step": step, "loss": run_loss / n_loss, "lr": opt.param_groups[0]["lr"],
                   "elapsed_s": round(time.monotonic() - t0, 1)}
            run_loss, n_loss = 0.0, 0
            if step % args.eval_every == 0 or step == args.steps:
                best = validate(row, best)
            record(row)
            torch.save({"model": model.state_dict(), "arch": args.arch, "opt": opt.state_dict(),
                        "step": step, "best": best,
                        "ema": ema.model.state_dict() if ema else None}, last)
            if args.time_limit and time.monotonic() - t0 > args.time_limit * 60:
                print(f"time limit reached at step={step}; rerun to resume", flush=True)
                break
    draw_curves(rows, args.out / "curves.png")
    metrics = {"steps": step, "best": best, "synthetic_samples": len(synth_t),
               "synthetic_sets": [str(f) for f in args.synth],
               "init": str(args.init) if args.init else None,
               "real_train_crops": len(real_t), "seed": args.seed,
               "train_seconds_this_session": round(time.monotonic() - t0, 1),
               "batch": args.batch, "real_share": args.real_share, "arch": args.arch,
               "precision": args.precision, "ema": args.ema}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
