"""`plategate config check|show|reference`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.capture.sources import source_problems
from agent.config.loader import ConfigError, Problem, load_config
from agent.config.reference import redacted, reference_markdown


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="check, show or document the device config",
                                   description="Validate a device config (TOML), show it with secrets "
                                               "redacted, or print the reference of every key.")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate FILE; print every problem; exit 0 if valid, 2 if not",
                           description="Validate a device config and print every problem with its key "
                                       "path. Exit code 0 if valid, 2 if not (usable as ExecStartPre=).")
    check.add_argument("file", type=Path, help="the TOML config to check")
    check.set_defaults(func=_check)
    show = sub.add_parser("show", help="print the effective config as JSON, secrets redacted",
                          description="Print the effective config (defaults filled in) as JSON with "
                                      "secrets redacted.")
    show.add_argument("file", type=Path, help="the TOML config to show")
    show.set_defaults(func=_show)
    ref = sub.add_parser("reference", help="print the Markdown reference of every config key",
                         description="Print the Markdown reference of every config key, generated "
                                     "from the schema.")
    ref.set_defaults(func=_reference)


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
        on_disk = [Problem(key, reason) for key, reason in source_problems(config.source)]
        if on_disk:
            raise ConfigError(str(args.file), on_disk)
    except ConfigError as exc:
        print(f"{exc.source}: INVALID, {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    print(f"{args.file}: OK")
    return 0


def _show(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(redacted(config), indent=2))
    return 0


def _reference(args: argparse.Namespace) -> int:
    sys.stdout.write(reference_markdown())
    return 0
