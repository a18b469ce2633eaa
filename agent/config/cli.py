"""`plategate config check|show|reference`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.config.loader import ConfigError, load_config
from agent.config.reference import redacted, reference_markdown


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="check, show or document the device config",
                                   description="Validate a device config (TOML), show it with secrets "
                                               "redacted, or print the reference of every key.")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate FILE and the files it names; exit 0 if valid, 2 if not",
                           description="Validate a device config and every file and folder it names (they "
                                       "exist and can be read, the state dir can be written, the models "
                                       "match their manifest); print every problem with its key path and "
                                       "file. Exit code 0 if usable, 2 if not (usable as ExecStartPre=).")
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
    # Imported here, not at the top: the source and model checks load OpenCV and numpy, which
    # every other `plategate` command would then pay for at start-up.
    from agent.runtime.preflight import load_usable_config

    try:
        load_usable_config(args.file)
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
