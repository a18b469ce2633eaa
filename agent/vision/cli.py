"""``plategate recognize`` and ``plategate eval``: the vision stage from the command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from agent.config.args import schema_option
from agent.config.schema import RecognizerConfig
from agent.resources import bundled_models_dir
from agent.vision.evaluate import DatasetError, evaluate, read_image
from agent.vision.models import ModelError
from agent.vision.recognizer import NoDetectorError, Recognizer, is_confident

DEFAULT_MODELS = bundled_models_dir()
AGENT_CUT = RecognizerConfig()  # the cut a unit with the default config applies (is_confident)
REGION = schema_option(RecognizerConfig, "region")
THREADS = schema_option(RecognizerConfig, "threads")
BELOW_CUT = "below the agent's cut"


def _models_dir(args: argparse.Namespace) -> Path:
    return Path(args.models or os.environ.get("PLATEGATE_MODELS") or DEFAULT_MODELS)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=None,
                        help="folder with manifest.json and the ONNX models "
                             f"(default: $PLATEGATE_MODELS or {DEFAULT_MODELS})")
    parser.add_argument("--threads", type=THREADS, default=1,
                        help="onnxruntime threads per model, 1-16 as recognizer.threads (default 1, "
                             "as on the camera)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def register(subparsers) -> None:
    rec = subparsers.add_parser(
        "recognize", help="find and read the plates in images",
        description="One-shot plate recognition on image files. By default only the reads a unit would "
                    "keep are shown: those that pass the agent's cut (recognizer.min_confidence and the "
                    "stricter cut for text of no plate format, at their default values); --all also "
                    "shows the others, marked. In --json every plate carries \"accepted\" (true if it "
                    "passes the cut).")
    rec.add_argument("images", nargs="+", metavar="IMAGE", help="image files to read")
    rec.add_argument("--crop", action="store_true",
                     help="the images are already plate crops: skip detection and read each")
    rec.add_argument("--region", default=None, type=REGION,
                     help="region hint for the plate formats, as recognizer.region (US, BR, EU, GB, "
                          "AR, US-XX for a US state)")
    rec.add_argument("--all", action="store_true", dest="show_all",
                     help="also show the reads the agent would throw away (below its cut), marked "
                          "'below the agent's cut' (JSON: \"accepted\": false)")
    _add_common(rec)
    rec.set_defaults(func=cmd_recognize)

    ev = subparsers.add_parser("eval", help="measure accuracy and speed on a labelled folder",
                               description="Accuracy and speed on a crops set (groundtruth.csv)"
                                           " or a scenes set (image + .txt per image).")
    ev.add_argument("dataset", metavar="DATASET", help="the labelled folder")
    ev.add_argument("--region", default=None, type=REGION,
                    help="region hint for the plate formats, as a unit's recognizer.region sets "
                         "it (US, BR, EU, GB, AR, US-XX for a US state); default: each crop's "
                         "region column (a state code in a set of several US states names that "
                         "state), none for scenes")
    ev.add_argument("--config", default=None, metavar="FILE",
                    help="device config whose recognizer section gives the read cut (and the "
                         "region hint unless --region is given) for the accepted.* figures; "
                         "default: the schema's defaults")
    ev.add_argument("--misreads", action="store_true",
                    help="also list every plate that was not read correctly")
    _add_common(ev)
    ev.set_defaults(func=cmd_eval)


def _load(args) -> Recognizer | None:
    try:
        return Recognizer.from_models(_models_dir(args), threads=args.threads)
    except ModelError as exc:
        print(f"plategate: {exc}", file=sys.stderr)
        return None


def cmd_recognize(args: argparse.Namespace) -> int:
    recognizer = _load(args)
    if recognizer is None:
        return 2
    if not args.crop and recognizer.detector is None:
        print("plategate: no plate detector installed (models/manifest.json has no "
              "'plate_detector' entry): use --crop for images that are already plate crops",
              file=sys.stderr)
        return 2
    failed = 0
    for name in args.images:
        out: dict = {"image": name}
        hidden = 0
        try:
            image = read_image(Path(name))
            t0 = time.perf_counter()
            hits = ([recognizer.read_crop(image, args.region)] if args.crop
                    else recognizer.recognize(image, args.region))
            out["ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
            plates = [dict(h.to_json(), accepted=is_confident(h, AGENT_CUT)) for h in hits]
            out["plates"] = plates if args.show_all else [p for p in plates if p["accepted"]]
            hidden = len(plates) - len(out["plates"])
            out["hidden_below_cut"] = hidden
        except (ValueError, NoDetectorError) as exc:
            failed += 1
            out.update({"ms": None, "plates": [], "error": str(exc)})
            print(f"plategate: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps(out), flush=True)
        elif "error" not in out:
            print(_text_line(name, out, hidden), flush=True)
    return 1 if failed else 0


def _text_line(name: str, out: dict, hidden: int) -> str:
    """`IMAGE: ABC1234 (0.93), 6O (0.00, below the agent's cut) [12.3 ms]`."""
    plates = ", ".join(f"{p['text']} ({p['confidence']:.2f}{'' if p['accepted'] else ', ' + BELOW_CUT})"
                       for p in out["plates"])
    note = f" ({hidden} {BELOW_CUT}; --all shows them)" if hidden else ""
    return f"{name}: {plates or 'no plate'}{note} [{out['ms']:.1f} ms]"


def _eval_cut(args: argparse.Namespace):
    """The recognizer section of ``--config`` (schema defaults without one), or None after
    printing why the file cannot be used."""
    from agent.config.loader import ConfigError, load_config
    if not args.config:
        return RecognizerConfig()
    try:
        return load_config(Path(args.config)).recognizer
    except ConfigError as exc:
        print(f"plategate: {exc}", file=sys.stderr)
        return None


def cmd_eval(args: argparse.Namespace) -> int:
    cut = _eval_cut(args)
    if cut is None:
        return 2
    recognizer = _load(args)
    if recognizer is None:
        return 2
    try:
        result = evaluate(Path(args.dataset), recognizer, region=args.region or cut.region,
                          cut=cut)
    except DatasetError as exc:
        print(f"plategate: {exc}", file=sys.stderr)
        return 2
    report = result.to_json()
    if args.misreads:
        report["misreads"] = result.misreads
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    pct = (lambda v: "n/a" if v is None else f"{100 * v:.1f}%")
    print(f"{args.dataset}: {report['format']}, {report['images']} images, "
          f"{report['plates']} plates")
    if report["detection_recall"] is not None:
        print(f"  detection recall  {pct(report['detection_recall'])}")
    print(f"  top-1 accuracy    {pct(report['top1_accuracy'])}")
    print(f"  top-5 accuracy    {pct(report['top5_accuracy'])}")
    acc = report["accepted"]
    print(f"  at the cut        {pct(acc['correct_rate'])} of plates read right and accepted, "
          f"{pct(acc['wrong_rate'])} of accepted reads wrong ({acc['wrong']} wrong, "
          f"{acc['unmatched']} at no labelled plate)")
    print(f"  ms per image      median {report['ms_per_image']['median']}, "
          f"p90 {report['ms_per_image']['p90']}")
    for err in report["errors"]:
        print(f"  error: {err['error']}")
    for miss in report.get("misreads", []):
        print(f"  misread {miss['image']}: {miss['truth']} -> {miss['read']}")
    return 0
