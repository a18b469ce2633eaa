"""`plategate console --port DEV --config FILE`: the technician's console on a serial port."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

EXIT_PORT = 1     # the port cannot be opened (yet): systemd may try again
EXIT_CONFIG = 78  # the config can never work: systemd must not restart it


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "console", help="serve the field technician's console on a serial port",
        description="Serve the technician's console on a serial port (8N1). It talks to the running agent "
                    "over the control socket in the state dir and can change device settings only; see "
                    "docs/console.md. Exit codes: 0 stopped, 1 the port cannot be opened, 78 invalid config.")
    parser.add_argument("--port", default=None, help="serial device, e.g. /dev/ttyS0 or /dev/ttyGS0 "
                                                     "(default: console.port of the config)")
    parser.add_argument("--config", type=Path, required=True, help="device config (TOML)")
    parser.add_argument("--baud", type=int, default=None, help="line speed (default: console.baud of the config)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from agent.config.loader import ConfigError, load_config
    from agent.console.console import SerialConsole
    from agent.console.context import ConsoleContext
    from agent.console.port import PortError
    from agent.runtime.logs import configure_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"plategate console: refusing to start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(args.log_level or config.logging.level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ctx = ConsoleContext.create(args.config, config)
    console = SerialConsole(ctx, args.port or config.console.port, args.baud or config.console.baud, stop)
    try:
        return console.run()
    except PortError as exc:
        print(f"plategate console: {exc}", file=sys.stderr)
        return EXIT_PORT
