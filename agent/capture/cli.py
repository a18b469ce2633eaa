"""`plategate capture test`: the field technician's check of the camera (agent.capture.probe)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.capture.probe import probe
from agent.config.loader import ConfigError, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("capture", help="check the camera or stream the config names",
                                   description="Check the frame source of a device config.")
    sub = parser.add_subparsers(dest="capture_command", metavar="ACTION", required=True)
    test = sub.add_parser(
        "test", help="grab frames for a few seconds; report fps, resolution, focus, brightness, plates",
        description="Grab frames from the config's source for a few seconds (privacy masks applied, as the "
                    "agent sees them) and report the achieved fps, resolution, focus (variance of the "
                    "Laplacian inside the region of interest; higher is sharper), brightness and clipped "
                    "shares, and the plates read. --snapshot writes one frame with the region of interest, "
                    "the masks and the detections drawn, to aim the camera. Exit 0 when frames came, 1 when "
                    "none did, 2 when the config is invalid.")
    test.add_argument("--config", type=Path, required=True, help="the device config (TOML)")
    test.add_argument("--seconds", type=float, default=5.0,
                      help="how long to grab frames, from the first frame (default 5)")
    test.add_argument("--snapshot", type=Path, default=None, metavar="FILE.jpg", help="write an annotated frame")
    test.add_argument("--no-plates", action="store_true", help="do not load the models or read plates")
    test.add_argument("--json", action="store_true", help="print one JSON object")
    test.set_defaults(func=_test)


def _test(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.seconds <= 0:
        print("--seconds must be positive", file=sys.stderr)
        return 2
    recognizer = None
    problems = []
    if not args.no_plates:
        try:
            from agent.vision.recognizer import Recognizer
            recognizer = Recognizer.from_config(config.recognizer)
        except Exception as exc:  # a camera check still helps without the models
            problems.append(f"plates not read: models not loaded ({exc})")
    report = probe(config, args.seconds, recognizer, args.snapshot)
    report.problems = problems + report.problems
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        _print(report)
    return 0 if report.frames else 1


def _print(report) -> None:
    print(f"source      {report.kind} {report.source}  state={report.source_status.get('state', '?')}")
    print(f"frames      {report.frames} in {report.seconds:g} s  ({report.fps} fps; first frame after "
          f"{report.connect_s} s)")
    if report.width:
        print(f"resolution  {report.width}x{report.height}")
        print(f"focus       {report.focus}  (variance of the Laplacian in the ROI; higher is sharper)")
        print(f"brightness  {report.brightness} / 255  (dark {report.dark_share:.1%}, blown {report.bright_share:.1%})")
    plates = ", ".join(f"{p['text']} ({p['confidence']:.2f})" for p in report.plates) or "none"
    print(f"plates      {plates}")
    if report.snapshot:
        print(f"snapshot    {report.snapshot}")
    for problem in report.problems:
        print(f"problem     {problem}")
