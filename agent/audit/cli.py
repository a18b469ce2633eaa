"""`plategate audit verify|report`: check the log's chain; produce the transparency report."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.audit.log import verify_log
from agent.audit.report import build_report, parse_date, render
from agent.policy.errors import PolicyError
from agent.policy.signing import load_public_key

EXIT_OK, EXIT_FAILED = 0, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser("audit", help="verify the audit log; make the transparency report",
                                  description="Work with the unit's hash-chained audit log.")
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="check the hash chain, checkpoints and head (exit 2 if bad)")
    verify.add_argument("log", type=Path, help="audit log file (JSON lines); its .head file is read too")
    verify.add_argument("--unit-key", type=Path, default=None,
                        help="the unit's public key (PEM) to check checkpoint and head signatures")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=cmd_verify)

    report = sub.add_parser("report", help="transparency report computed from the log alone",
                            description="Transparency report computed from the log alone. Its integrity "
                                        "line says what was checked: the hash chain always; the unit's "
                                        "signatures only with --unit-key. A log that fails the check "
                                        "still gets its report, and the exit status is 2.")
    report.add_argument("log", type=Path, help="audit log file (JSON lines); its .head file is read too")
    report.add_argument("--unit-key", type=Path, default=None,
                        help="the unit's public key (PEM): also verify the signed head and checkpoints")
    report.add_argument("--since", default=None,
                        help="start date, YYYY-MM-DD (UTC) or ISO 8601 time (default: start of the log)")
    report.add_argument("--until", default=None, help="end (exclusive), YYYY-MM-DD (UTC) or ISO 8601 time")
    report.add_argument("--format", choices=("md", "html", "json"), default="md", help="output format (default md)")
    report.add_argument("--out", type=Path, default=None, help="write to this file instead of stdout")
    report.set_defaults(func=cmd_report)


def _unit_key(args: argparse.Namespace) -> Ed25519PublicKey | None:
    """The --unit-key public key, or None; raises ValueError naming the file if it is unusable."""
    try:
        return load_public_key(args.unit_key) if args.unit_key else None
    except (OSError, PolicyError) as exc:
        raise ValueError(f"cannot load unit key {args.unit_key}: {exc}") from exc


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        key = _unit_key(args)
    except ValueError as exc:
        print(f"plategate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    result = verify_log(args.log, key)
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
        return EXIT_OK if result.ok else EXIT_FAILED
    for warning in result.warnings:
        print(f"warning: {warning}")
    if not result.ok:
        print(f"FAILED {args.log}: {result.problem}")
        if result.first_bad_seq is not None:
            print(f"first bad record: seq {result.first_bad_seq}"
                  + (f" (line {result.first_bad_line})" if result.first_bad_line else ""))
        return EXIT_FAILED
    print(f"OK {args.log}: {result.records} records, hash chain intact, {result.checkpoints} checkpoint(s)"
          + (f", signatures verified up to seq {result.last_verified_seq}" if key else ""))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    try:
        since = parse_date(args.since) if args.since else None
        until = parse_date(args.until) if args.until else None
        report = build_report(args.log, since, until, unit_key=_unit_key(args))
    except (OSError, ValueError) as exc:
        print(f"plategate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    text = render(report, args.format)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    integrity = report.get("integrity")
    if integrity is not None and not integrity["ok"]:
        # The report is still written (the auditor needs it), but a script that publishes
        # reports must not take this one for a good one.
        print(f"plategate: {args.log}: log integrity FAILED: {integrity['problem']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
