"""Interpolate the weights of two plate OCR models of the same network (a "model soup").

    .venv/bin/python tools/soup_ocr.py START.onnx TUNED.onnx --share 0.5 --out runs/soup50.onnx
    .venv/bin/python tools/export_ocr.py --fp32-onnx runs/soup50.onnx --version X.Y.Z ...

Why: a fine-tuning stage trades one skill for another (v1.6.0 learnt blurred and detector-cut
plates from v1.5.0 and lost some clean crops). Weights on the line between a model and its
fine-tuned descendant often keep most of both (Wortsman et al., "Robust fine-tuning of
zero-shot models", 2022), at no cost at read time: the network is the same size. Both inputs are
fp32 ONNX files as ``tools/export_ocr.py`` writes them (batch norms folded into the
convolutions), so every weight tensor is interpolated as it is; no training data is read.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx
from onnx import numpy_helper

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.onnx_file import load_onnx  # noqa: E402


def soup(start: onnx.ModelProto, tuned: onnx.ModelProto, share: float) -> onnx.ModelProto:
    """``start``'s graph with every float weight ``(1 - share) * start + share * tuned``.

    Raises ValueError where the two are not the same network (weights differ in name, shape or
    type), since an interpolation between different graphs means nothing."""
    theirs = {w.name: w for w in tuned.graph.initializer}
    ours = [w.name for w in start.graph.initializer]
    if sorted(ours) != sorted(theirs):
        raise ValueError("the two models hold different weights (not the same network)")
    out = onnx.ModelProto()
    out.CopyFrom(start)
    for w in out.graph.initializer:
        a, b = numpy_helper.to_array(w), numpy_helper.to_array(theirs[w.name])
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"weight {w.name}: {a.shape} {a.dtype} against {b.shape} {b.dtype} "
                             "(not the same network)")
        if a.dtype.kind == "f":
            w.CopyFrom(numpy_helper.from_array(((1 - share) * a + share * b).astype(a.dtype),
                                               w.name))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("start", type=Path, help="fp32 ONNX of the model a stage started from")
    p.add_argument("tuned", type=Path, help="fp32 ONNX of the stage's result")
    p.add_argument("--share", type=float, required=True,
                   help="weight of TUNED, 0..1 (0: START itself, 1: TUNED itself)")
    p.add_argument("--out", type=Path, required=True, help="fp32 ONNX to write")
    args = p.parse_args(argv)
    if not 0.0 <= args.share <= 1.0:
        p.error(f"--share {args.share}: must be between 0 and 1")
    try:
        start, tuned = load_onnx(args.start), load_onnx(args.tuned)
    except ValueError as exc:
        p.error(str(exc))
    try:
        mixed = soup(start, tuned, args.share)
    except ValueError as exc:
        p.error(f"{args.start} and {args.tuned}: {exc}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(mixed, str(args.out))
    print(f"wrote {args.out}: {1 - args.share:g} x {args.start} + {args.share:g} x {args.tuned}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
