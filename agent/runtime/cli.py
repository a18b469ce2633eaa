"""`plategate run --config FILE`: the agent itself."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run the agent (capture, recognise, apply the policy, deliver)",
        description="Run the agent until SIGTERM/SIGINT. SIGHUP re-reads the config and re-installs the "
                    "policy and hotlists; an invalid config is refused and the running one kept. Exit codes: "
                    "0 clean stop, 2 usage, 70 a stage kept crashing (systemd restarts the unit), 74 stopped "
                    "but the disk refused reads or audit records (counted in the last log line), 78 the "
                    "config can never work: invalid, or names a missing or unreadable file (systemd: "
                    "RestartPreventExitStatus=78), 75 a restart asked for at the technician's console (systemd "
                    "starts it again).")
    parser.add_argument("--config", type=Path, required=True, help="device config (TOML)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from agent.runtime.agent import run_agent  # keeps `plategate --help` free of model/broker imports

    return run_agent(args.config, log_level=args.log_level)
