"""`plategate keygen` and `plategate policy sign|verify|check|explain`.

Exit codes: 0 ok, 2 refused / lint errors / bad input (so `policy verify` can gate a deploy
script and `policy check` a CI job), 1 for anything unexpected.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.policy.bundle import load_bundle, parse_policy_json, sign_bundle
from agent.policy.engine import decide
from agent.policy.errors import PolicyError
from agent.policy.hotlist import load_hotlist, sign_hotlist
from agent.policy.lint import lint_policy
from agent.policy.model import Policy
from agent.policy.schema import Errors, format_time, parse_time
from agent.policy.signing import key_id, load_private_key, load_trusted_keys, open_envelope, write_keypair
from agent.reads import Candidate, HotlistHit, ReadEvent

EXIT_OK, EXIT_REFUSED = 0, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    keygen = subparsers.add_parser("keygen", help="create an Ed25519 key pair (PREFIX.key, PREFIX.pub)",
                                   description="Create an Ed25519 key pair: PREFIX.key (PEM, mode 0600) and "
                                               "PREFIX.pub; prints the key id (first 16 hex of SHA-256 of "
                                               "the raw public key).")
    keygen.add_argument("--out", required=True, type=Path, help="path prefix for the .key and .pub files")
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    keygen.set_defaults(func=cmd_keygen)

    policy = subparsers.add_parser("policy", help="sign, verify, lint and explain sharing policies",
                                   description="Work with signed sharing-policy bundles.")
    sub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    sign = sub.add_parser("sign", help="sign a policy (or hotlist) JSON into a bundle")
    sign.add_argument("json", type=Path, help="policy or hotlist JSON document")
    sign.add_argument("--key", required=True, type=Path, help="department private key (PEM)")
    sign.add_argument("--out", required=True, type=Path, help="bundle file to write")
    sign.add_argument("--hotlist", action="store_true", help="the document is a hotlist, not a policy")
    sign.set_defaults(func=cmd_sign)

    verify = sub.add_parser("verify", help="verify a bundle as a unit would (exit 2 if refused)")
    verify.add_argument("bundle", type=Path, help="signed bundle file")
    verify.add_argument("--trusted", required=True, type=Path, action="append", metavar="PUB",
                        help="a trusted department public key (PEM); repeat for several")
    verify.add_argument("--active-version", type=int, default=None,
                        help="version already active on the unit (refuse this version or lower)")
    verify.add_argument("--now", default=None, help="check validity at this ISO 8601 time instead of now")
    verify.add_argument("--hotlist", action="store_true", help="the bundle is a hotlist")
    verify.add_argument("--json", action="store_true", help="print the verified policy summary as JSON")
    verify.set_defaults(func=cmd_verify)

    check = sub.add_parser("check", help="lint a policy JSON or bundle (exit 2 on errors)")
    check.add_argument("policy", type=Path, help="policy JSON or bundle (signature not checked)")
    check.add_argument("--now", default=None, help="lint as of this ISO 8601 time instead of now")
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.add_argument("--trusted", type=Path, action="append", default=None, metavar="PUB",
                       help="also verify a bundle's signature with this department public key; "
                            "repeat for several")
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser("explain", help="show, per destination, what a read would get and why")
    explain.add_argument("policy", type=Path, help="policy JSON or bundle (signature not checked)")
    explain.add_argument("read", type=Path, help="read event JSON ('-' for stdin): plate, confidence, "
                                                 "seen_at, camera_id, optional latitude, longitude, hits")
    explain.add_argument("--now", default=None, help="decide at this ISO 8601 time (default: read's seen_at + 1s)")
    explain.add_argument("--json", action="store_true", help="print JSON instead of a table")
    explain.add_argument("--trusted", type=Path, action="append", default=None, metavar="PUB",
                         help="verify the bundle's signature with this department public key first; "
                              "repeat for several")
    explain.set_defaults(func=cmd_explain)


def _now(value: str | None) -> float:
    if value is None:
        return time.time()
    errs = Errors()
    ts = parse_time(value, "--now", errs)
    errs.raise_if_any("argument")
    return ts  # type: ignore[return-value]


def _err(message: str) -> int:
    print(f"plategate: {message}", file=sys.stderr)
    return EXIT_REFUSED


def write_key_files(args: argparse.Namespace, key) -> tuple[Path, Path] | int:
    """`key` written to args.out (.key/.pub, args.force to overwrite), or the exit code after
    printing why not (for every keygen command: Ed25519 here, X25519 for `receive keygen`)."""
    try:
        return write_keypair(args.out, key, overwrite=args.force)
    except FileExistsError:
        return _err(f"{args.out}.key already exists (use --force to overwrite)")
    except OSError as exc:
        return _err(f"cannot write key files at {args.out}: {exc}")


def cmd_keygen(args: argparse.Namespace) -> int:
    key = Ed25519PrivateKey.generate()
    written = write_key_files(args, key)
    if isinstance(written, int):
        return written
    key_path, pub_path = written
    print(f"key id {key_id(key.public_key())}\nprivate key {key_path} (keep secret)\npublic key {pub_path}")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        doc = json.loads(args.json.read_text())
        key = load_private_key(args.key)
        data = sign_hotlist(doc, key) if args.hotlist else sign_bundle(doc, key)
    except (OSError, json.JSONDecodeError) as exc:
        return _err(f"{args.json}: {exc}")
    except PolicyError as exc:
        return _err(f"{args.json}: refused to sign: {exc}")
    args.out.write_bytes(data)
    print(f"signed {args.json} -> {args.out} (key id {key_id(key.public_key())})")
    return EXIT_OK


def _summary(policy: Policy) -> dict:
    return {
        "agency": policy.agency, "version": policy.version, "digest": policy.digest,
        "signer_key_id": policy.signer_key_id, "not_before": format_time(policy.not_before),
        "expires_at": format_time(policy.expires_at),
        "destinations": [{"id": d.id, "class": d.dest_class, "jurisdiction": d.jurisdiction,
                          "mode": d.rule.mode, "rule": d.rule.id} for d in policy.destinations],
        "prohibitions": {"classes": sorted(policy.prohibitions.classes),
                         "purposes": sorted(policy.prohibitions.purposes),
                         "allowed_jurisdictions": sorted(policy.prohibitions.allowed_jurisdictions)},
    }


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        trusted = load_trusted_keys(args.trusted)
        data = args.bundle.read_bytes()
        now = _now(args.now)
        if args.hotlist:
            hot = load_hotlist(data, trusted, now, args.active_version)
            print(f"OK hotlist {hot.list_id} version {hot.version}: {len(hot.plates)} plates, purpose "
                  f"{hot.purpose}, signed by {hot.signer_key_id}")
            return EXIT_OK
        policy = load_bundle(data, trusted, now, args.active_version)
    except OSError as exc:
        return _err(f"{exc}")
    except PolicyError as exc:
        return _err(f"{args.bundle}: REFUSED ({exc.reason}): {exc.detail}")
    if args.json:
        print(json.dumps(_summary(policy), indent=2))
    else:
        print(f"OK {args.bundle}: policy version {policy.version} of {policy.agency!r}, signed by "
              f"{policy.signer_key_id}, valid {format_time(policy.not_before)} .. {format_time(policy.expires_at)}, "
              f"{len(policy.destinations)} destination(s), digest {policy.digest}")
    return EXIT_OK


def _load(path: Path, trusted: list[Path] | None, now: float) -> Policy:
    """Parse a policy; with ``trusted`` keys, verify the bundle's signature first (not its dates:
    `check` reports those as findings, `explain` may ask about any time)."""
    data = path.read_bytes()
    if not trusted:
        return parse_policy_json(data)
    opened = open_envelope(data, "policy", load_trusted_keys(trusted))
    return parse_policy_json(opened.payload, signer_key_id=opened.key_id)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        now = _now(args.now)
        policy = _load(args.policy, args.trusted, now)
    except OSError as exc:
        return _err(str(exc))
    except PolicyError as exc:
        for item in getattr(exc, "errors", None) or [exc.detail or str(exc)]:
            print(f"error: {item}")
        print(f"{args.policy}: refused ({exc.reason})")
        return EXIT_REFUSED
    findings = lint_policy(policy, now)
    for finding in findings:
        print(finding)
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    print(f"{args.policy}: policy version {policy.version}, {len(policy.destinations)} destination(s): "
          f"{errors} error(s), {warnings} warning(s)")
    return EXIT_REFUSED if errors or (args.strict and warnings) else EXIT_OK


def read_from_json(doc: dict) -> ReadEvent:
    """A ReadEvent from explain's input JSON (seen_at: ISO 8601 or unix seconds)."""
    errs = Errors()
    if not isinstance(doc, dict):
        raise PolicyError("schema", "read: expected a JSON object")
    seen = doc.get("seen_at")
    seen_at = float(seen) if isinstance(seen, (int, float)) else parse_time(seen, "read.seen_at", errs)
    errs.raise_if_any("read")
    hits = tuple(HotlistHit(str(h.get("list_id", "?")), int(h.get("list_version", 1)), str(h["purpose"]),
                            str(h.get("source", "?"))) for h in doc.get("hits", []))
    return ReadEvent(plate=str(doc.get("plate", "")), confidence=float(doc.get("confidence", 0.0)),
                     seen_at=seen_at, camera_id=str(doc.get("camera_id", "")),
                     read_id=str(doc.get("read_id", "explain")),
                     latitude=doc.get("latitude"), longitude=doc.get("longitude"),
                     candidates=tuple(Candidate(c["text"], c["confidence"]) for c in doc.get("candidates", [])),
                     hits=hits)


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        raw = sys.stdin.read() if str(args.read) == "-" else args.read.read_text()
        read = read_from_json(json.loads(raw))
        now = _now(args.now) if args.now else read.seen_at + 1.0
        policy = _load(args.policy, args.trusted, now)
    except PolicyError as exc:
        return _err(f"{args.policy}: REFUSED ({exc.reason}): {exc.detail}")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return _err(f"{exc}")
    rows = []
    for dest in policy.destinations:
        d = decide(read, dest, policy, now)
        rows.append({"destination": dest.id, "class": dest.dest_class, "jurisdiction": dest.jurisdiction,
                     "allowed": d.allowed, "rule_id": d.rule_id, "reason": d.reason,
                     "fields": sorted(d.fields), "hit_purposes": sorted(d.purposes),
                     "sealed": dest.sealing is not None,
                     "routing_metadata": sorted(dest.sealing.routing_metadata) if dest.sealing else []})
    if args.json:
        print(json.dumps({"policy_version": policy.version, "now": format_time(now), "decisions": rows}, indent=2))
        return EXIT_OK
    print(f"policy version {policy.version} ({policy.agency}) at {format_time(now)}; read "
          f"{'HIT ' + ','.join(h.purpose for h in read.hits) if read.hits else 'non-hit'}")
    width = max((len(r["destination"]) for r in rows), default=11)
    for r in rows:
        verdict = "ALLOW" if r["allowed"] else "DENY "
        print(f"  {r['destination']:<{width}}  {verdict}  {r['rule_id']}")
        print(f"  {'':<{width}}         {r['reason']}")
        if r["allowed"]:
            print(f"  {'':<{width}}         fields: {', '.join(r['fields']) or '(none)'}"
                  + (f"; hit purposes: {', '.join(r['hit_purposes'])}" if r["hit_purposes"] else ""))
            if r["sealed"]:
                print(f"  {'':<{width}}         sealed; the broker sees only: "
                      f"{', '.join(r['routing_metadata']) or '(no read fields)'}")
    return EXIT_OK
