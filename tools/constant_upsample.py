"""Rewrite a detector ONNX file's upsampling as a constant x2 scale: same weights, same outputs.

    .venv/bin/python tools/constant_upsample.py models/plate_detector.onnx /tmp/det/plate_detector.onnx
    # then measure it against the shipped file and install it by rule:
    PLATEGATE_DATASETS=... .venv/bin/python tools/choose_detector.py /tmp/det --install

Why: the detector's decoder upsamples each coarse level "to the size of the finer one"; the
first exporter wrote that size as a chain of Shape, Gather, Slice and Concat nodes. onnxruntime
cannot run a Resize whose size is only known at run time in its blocked (NCHWc) layout, so each
of the three upsamplings left that layout and came back (reorders both ways), about a quarter of
the model's CPU time at 4K. The network's input is always padded to a multiple of 32 (the
manifest's ``input.multiple``; `agent/vision/detector.py: prepare_input`), so every level is
exactly twice the next coarser one and a constant scale of 2 computes the same thing.
`tools/train_detector.py` now exports that way itself; this tool brings a file exported
before to the same graph without retraining.

The rewrite is refused unless both files give the same outputs (to float rounding, TOLERANCE)
on random inputs of several sizes that are multiples of 32 (CHECK_SHAPES).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CHECK_SHAPES = ((1, 3, 64, 96), (1, 3, 288, 512), (1, 3, 544, 960), (1, 3, 768, 1344))
TOLERANCE = 1e-4  # largest output difference allowed (heat is a probability, reg in cells)
SCALES_NAME = "upsample_x2_scales"


def rewrite(source: Path, target: Path) -> int:
    """Write ``source`` with every nearest Resize given constant x2 scales to ``target``;
    returns how many Resize nodes were rewritten. Nodes that only computed sizes are dropped."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(source))
    except Exception as exc:  # protobuf's DecodeError, OSError
        raise ValueError(f"{source}: not a readable ONNX model ({exc})") from None
    graph = model.graph
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    for node in resizes:
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "nearest")
        if mode != "nearest":
            raise ValueError(f"{source}: Resize {node.name} is {mode!r}, not nearest; "
                             "only the detector's nearest x2 upsampling is rewritten")
    if not resizes:
        raise ValueError(f"{source}: has no Resize node to rewrite")
    if SCALES_NAME not in {i.name for i in graph.initializer}:
        graph.initializer.append(numpy_helper.from_array(
            np.array([1.0, 1.0, 2.0, 2.0], np.float32), SCALES_NAME))
    for node in resizes:
        data = node.input[0]
        del node.input[:]
        node.input.extend([data, "", SCALES_NAME])
    # keep only the nodes the outputs still need (the size chains are now dead)
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return len(resizes)


def largest_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between the two models' outputs over CHECK_SHAPES."""
    from agent.vision.models import cpu_session

    sessions = [cpu_session(p) for p in (a, b)]
    name = sessions[0].get_inputs()[0].name
    rng = np.random.default_rng(0)
    worst = 0.0
    for shape in CHECK_SHAPES:
        x = rng.normal(size=shape).astype(np.float32)
        ours, theirs = (s.run(None, {name: x}) for s in sessions)
        worst = max(worst, *(float(np.abs(p - q).max()) for p, q in zip(ours, theirs)))
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="detector ONNX file (fp32)")
    p.add_argument("target", type=Path, help="where the rewritten file goes (a new path)")
    args = p.parse_args(argv)
    if args.target.resolve() == args.source.resolve():
        p.error("the target must be another file: the manifest's sha256 names the source")
    try:
        count = rewrite(args.source, args.target)
    except ValueError as exc:
        print(f"constant_upsample: {exc}", file=sys.stderr)
        return 2
    diff = largest_difference(args.source, args.target)
    if diff > TOLERANCE:
        args.target.unlink()
        print(f"constant_upsample: outputs differ by {diff:.3g} (> {TOLERANCE}): the x2 "
              "scale does not hold for this network; nothing written", file=sys.stderr)
        return 1
    print(f"wrote {args.target}: {count} Resize nodes with constant x2 scales, outputs within "
          f"{diff:.2g} of {args.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
