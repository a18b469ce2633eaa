"""`plategate receive`: the department's receiver and its registry, export and health commands.

    plategate receive --config FILE                       run a receiver (until SIGTERM/SIGINT)
    plategate receive --config FILE --retire              drain and end this receiver's session
    plategate receive keygen --out PREFIX                 the department's X25519 sealing key
    plategate receive units add|list|revoke --config FILE register unit keys
    plategate receive export --config FILE --since DATE --format csv|json
    plategate receive health --config FILE                per-unit health from status topics
    plategate receive stats --config FILE                 stored / duplicate / rejected counts

Exit codes: 0 ok, 2 usage or a refused request, 78 a config or database that can never
work, 1 anything unexpected.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.config.loader import ConfigError
from agent.policy.signing import key_id
from agent.provenance.keys import KeyFileError, load_unit_public_key, raw_public

EXIT_OK, EXIT_USAGE, EXIT_CONFIG = 0, 2, 78


def register(subparsers) -> None:
    receive = subparsers.add_parser(
        "receive", help="the department's receiver: verify, unseal and store reads",
        usage="plategate receive --config FILE [--retire]\n       plategate receive ACTION ...",
        description="Subscribe to the department's read topics (MQTT 5 shared subscription), check "
                    "every read (schema, destination, seal, registered unit key, signature), store it "
                    "(SQLite or PostgreSQL) and acknowledge it only once committed. See docs/receiver.md.")
    receive.add_argument("--config", type=Path, help="receiver config (TOML)")
    receive.add_argument("--retire", action="store_true",
                         help="take this receiver (its client_id) out of the share group for good: "
                              "store what the broker holds for it, unsubscribe, end its session")
    receive.set_defaults(func=cmd_run)
    sub = receive.add_subparsers(dest="receive_command", metavar="ACTION")

    def with_config(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="receiver config (TOML)")
        return parser

    keygen = sub.add_parser("keygen", help="create the department's X25519 sealing key pair",
                            description="Create PREFIX.key (PEM, mode 0600) and PREFIX.pub; prints the "
                                        "public key as the policy's sealing.x25519_public_key (hex) "
                                        "and its key id.")
    keygen.add_argument("--out", required=True, type=Path, help="path prefix for the .key and .pub files")
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    keygen.set_defaults(func=cmd_keygen)

    units = sub.add_parser("units", help="register, list and revoke unit signing keys")
    usub = units.add_subparsers(dest="units_command", metavar="ACTION", required=True)
    add = with_config(usub.add_parser(
        "add", help="register a unit's public key",
        description="Register a unit's Ed25519 public key. --key-id is the key id the unit's "
                    "installer printed; the key file must have exactly that id, so a swapped file "
                    "is refused."))
    add.add_argument("unit_id", help="the unit's id (unit.id in its config)")
    add.add_argument("--key", required=True, type=Path, help="the unit's public key (PEM)")
    add.add_argument("--key-id", required=True, help="key id printed by the installer (16 hex)")
    add.add_argument("--note", default="", help="free text kept with the key (site, installer)")
    add.set_defaults(func=cmd_units_add)
    lst = with_config(usub.add_parser("list", help="list registered unit keys"))
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cmd_units_list)
    revoke = with_config(usub.add_parser(
        "revoke", help="revoke a unit's key(s): its later reads are rejected",
        description="Revoke one key of a unit (--key-id) or all of them. Every receiver stops "
                    "accepting reads signed by a revoked key with its next batch."))
    revoke.add_argument("unit_id", help="the unit whose key(s) to revoke")
    revoke.add_argument("--key-id", default=None, help="revoke only this key")
    revoke.set_defaults(func=cmd_units_revoke)

    export = with_config(sub.add_parser(
        "export", help="export stored reads as CSV or JSON",
        description="Write the reads received since --since (and before --until) to stdout or --out. "
                    "JSON keeps absent fields absent; CSV leaves them empty and omits images."))
    export.add_argument("--since", required=True, help="ISO 8601 date or time (UTC if no zone)")
    export.add_argument("--until", default=None, help="ISO 8601 date or time (exclusive)")
    export.add_argument("--format", choices=("csv", "json"), default="json", help="csv or json")
    export.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    export.set_defaults(func=cmd_export)

    health = with_config(sub.add_parser("health", help="per-unit health from the status topics"))
    health.add_argument("--json", action="store_true", help="print JSON")
    health.set_defaults(func=cmd_health)

    stats = with_config(sub.add_parser("stats", help="stored, duplicate and rejected counts, with samples"))
    stats.add_argument("--samples", action="store_true", help="also print the kept reject samples")
    stats.set_defaults(func=cmd_stats)


def _err(message: str, code: int = EXIT_USAGE) -> int:
    print(f"plategate receive: {message}", file=sys.stderr)
    return code


def _load(args):
    """(config, None) or (None, exit code) after printing why."""
    from agent.receiver.config import load_receiver_config
    if getattr(args, "config", None) is None:
        return None, _err("--config FILE is required")
    try:
        return load_receiver_config(args.config), None
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None, EXIT_CONFIG


def _store(config):
    from agent.receiver.store import open_store
    return open_store(config.storage.dsn, config.storage.sqlite)


def _with_store(args, query):
    """(config, query(store)) for the config named by args, the store closed after; or
    (None, exit code) when the config is unusable (the problem printed)."""
    config, code = _load(args)
    if config is None:
        return None, code
    store = _store(config)
    try:
        return config, query(store)
    finally:
        store.close()


def _parse_when(text: str) -> float:
    value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def cmd_run(args: argparse.Namespace) -> int:
    from agent.receiver.service import SWITCH_INTERVAL_S, Receiver
    from agent.receiver.store import StoreError
    config, code = _load(args)
    if config is None:
        return code
    try:
        store = _store(config)
        stop = threading.Event()
        receiver = Receiver(config, store, stop)
    except (StoreError, KeyFileError, OSError, ValueError) as exc:
        return _err(str(exc), EXIT_CONFIG)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sys.setswitchinterval(SWITCH_INTERVAL_S)    # this process is the receiver (see service.py)
    try:
        if args.retire:
            if not receiver.retire():
                return _err("not fully drained; run --retire again (its session is kept)", 1)
            print(f"retired {config.broker.client_id}")
        else:
            receiver.run()
    finally:
        store.close()
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from agent.policy.cli import write_key_files
    key = X25519PrivateKey.generate()
    written = write_key_files(args, key)
    if isinstance(written, int):
        return written
    key_path, pub_path = written
    print(f"key id {key_id(key.public_key())}\n"
          f"x25519_public_key {raw_public(key.public_key()).hex()}\n"
          f"private key {key_path} (keep secret; list it in the receiver's accept.private_keys)\n"
          f"public key {pub_path}")
    return EXIT_OK


def cmd_units_add(args: argparse.Namespace) -> int:
    from agent.receiver.store import StoreError
    config, code = _load(args)
    if config is None:
        return code
    try:
        public_key = load_unit_public_key(args.key)
    except KeyFileError as exc:
        return _err(str(exc))
    actual = key_id(public_key)
    if args.key_id.strip().lower() != actual:
        return _err(f"{args.key}: key id is {actual}, not {args.key_id} as given: not registered "
                    f"(check the key file came from unit {args.unit_id!r})")
    store = _store(config)
    try:
        kid = store.add_unit(args.unit_id, public_key, args.note)
    except StoreError as exc:
        return _err(str(exc))
    finally:
        store.close()
    print(f"registered unit {args.unit_id} key {kid}")
    return EXIT_OK


def cmd_units_list(args: argparse.Namespace) -> int:
    config, units = _with_store(args, lambda store: store.list_units())
    if config is None:
        return units
    if args.json:
        print(json.dumps(units, indent=2))
        return EXIT_OK
    print(f"{'unit':<24} {'key id':<17} {'added':<20} revoked")
    for u in units:
        revoked = _when(u["revoked_at"]) if u["revoked_at"] else "-"
        print(f"{u['unit_id']:<24} {u['key_id']:<17} {_when(u['added_at']):<20} {revoked}")
    return EXIT_OK


def cmd_units_revoke(args: argparse.Namespace) -> int:
    config, count = _with_store(args, lambda store: store.revoke_unit(args.unit_id, args.key_id))
    if config is None:
        return count
    if not count:
        return _err(f"no active key of unit {args.unit_id!r}"
                    + (f" with id {args.key_id}" if args.key_id else "") + " to revoke")
    print(f"revoked {count} key(s) of unit {args.unit_id}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from agent.receiver.export import write_export
    config, code = _load(args)
    if config is None:
        return code
    try:
        since = _parse_when(args.since)
        until = _parse_when(args.until) if args.until else None
    except ValueError as exc:
        return _err(f"--since/--until: {exc}")
    store = _store(config)
    try:
        rows = store.read_rows(since, until)
        if args.out is None:
            count = write_export(rows, args.format, sys.stdout)
        else:
            with open(args.out, "w", newline="") as fh:
                count = write_export(rows, args.format, fh)
    finally:
        store.close()
    print(f"exported {count} read(s)", file=sys.stderr)
    return EXIT_OK


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_health(args: argparse.Namespace) -> int:
    from agent.receiver.health import online_state
    config, rows = _with_store(args, lambda store: store.health())
    if config is None:
        return rows
    now = time.time()
    for row in rows:
        row["state"] = online_state(row, now, config.storage.offline_after_s)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'unit':<24} {'state':<8} {'last seen':<20} {'queue':>7} policy")
    for row in rows:
        depth = "-" if row["queue_depth"] is None else str(row["queue_depth"])
        version = "-" if row["policy_version"] is None else f"v{row['policy_version']}"
        print(f"{row['unit_id']:<24} {row['state']:<8} {_when(row['last_seen_at']):<20} {depth:>7} {version}")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    config, found = _with_store(args, lambda store: (store.counts(),
                                                     store.samples() if args.samples else []))
    if config is None:
        return found
    counts, samples = found
    print(json.dumps({"counts": counts, "samples": [
        {"reason": s.reason, "detail": s.detail, "topic": s.topic, "received_at": _when(s.received_at),
         "message": s.message.decode("utf-8", errors="replace")[:2000]} for s in samples]}, indent=2))
    return EXIT_OK
