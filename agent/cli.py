"""The `plategate` command line: one entry point, one sub-command per job.

Each area registers its own sub-commands (``register(subparsers)`` in
``agent/<area>/cli.py``) so the parser for a job lives next to the code that does it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from agent import __version__
from agent.runtime.logs import configure_logging

# Modules that contribute sub-commands, in the order they appear in --help.
COMMAND_MODULES = (
    "agent.runtime.cli",
    "agent.config.cli",
    "agent.capture.cli",
    "agent.vision.cli",
    "agent.policy.cli",
    "agent.audit.cli",
    "agent.console.cli",
    "agent.receiver.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plategate",
        description="PlateGate edge agent: reads licence plates on the camera and shares each read "
        "only with the destinations the department's signed policy allows.",
    )
    parser.add_argument("--version", action="version", version=f"plategate {__version__}")
    parser.add_argument("--log-level", default=None, type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="override the log level of the config (DEBUG, INFO, WARNING, ERROR)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # an area still being built
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.log_level:
        configure_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
