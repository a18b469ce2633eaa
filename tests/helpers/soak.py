"""Delivery harness: a real outbox + gate + MQTT stack under a signed test policy.

Used by the fault tests (which SIGKILL it: ``python -m helpers.soak`` run from tests/), by
tools/bench_delivery.py, and by tests that need a policy quickly. It is not part of the
agent's pipeline: it generates its own policy signing key (kept in its state directory
so a restarted run trusts the policy it installed before).

``--self-kill SEED`` makes the runner SIGKILL itself at a point inside the accept path
chosen from SEED (which accept call, and before the audit flush, between the flush and the
outbox commit, or right after the commit), for the audit/outbox reconciliation test.

Runner protocol (for the kill test): before each batch it appends ``A <first> <last>``
to ``attempted.log`` and fsyncs, then accepts the batch, then appends ``C <first>
<last>`` to ``confirmed.log`` and fsyncs. A restart resumes after the last attempted
batch. So every read in a C line was acknowledged by the outbox, and every read that
can ever be delivered is in an A line.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.policy.model import Policy
from agent.reads import HotlistHit, ReadEvent

log = logging.getLogger(__name__)

ALL_FIELDS = ("plate", "confidence", "timestamp", "camera_id", "location")


def iso(ts: float) -> str:
    from agent.policy.schema import format_time
    return format_time(ts)


def destination_doc(dest_id: str, broker_url: str, topic: str, *, mode: str = "all",
                    fields: Sequence[str] = ALL_FIELDS, plate_form: str = "clear",
                    pin: str | None = None, ca_pem: str | None = None,
                    dest_class: str = "local_police", jurisdiction: str = "US-CT",
                    purposes: Sequence[str] = ("stolen_vehicle",), max_age_s: float | None = None,
                    location_precision_m: float = 0.0, seal_to: bytes | None = None,
                    routing_metadata: Sequence[str] = ()) -> dict:
    """One destination entry of a plategate.policy/1 document; `seal_to` (raw X25519 public
    key) makes it a sealed destination, showing `routing_metadata` on the envelope."""
    transport: dict = {"broker_url": broker_url, "topic": topic}
    if pin:
        transport["server_key_sha256"] = pin
    if ca_pem:
        transport["ca_pem"] = ca_pem
    rule: dict = {"id": f"{dest_id}-rule", "mode": mode, "fields": sorted(fields),
                  "plate_form": plate_form, "location_precision_m": location_precision_m}
    if max_age_s is not None:
        rule["max_age_s"] = max_age_s
    doc = {"id": dest_id, "agency": f"{dest_id} agency", "class": dest_class,
           "jurisdiction": jurisdiction, "transport": transport, "purposes": sorted(purposes),
           "rule": rule}
    if seal_to is not None:
        doc["sealing"] = {"x25519_public_key": seal_to.hex(),
                          "routing_metadata": sorted(routing_metadata)}
    return doc


def policy_doc(version: int, destinations: Iterable[dict], now: float, *,
               nonhit_max_age_minutes: float = 24 * 60, hit_max_age_days: float = 30,
               valid_for_s: float = 30 * 24 * 3600, prohibited_classes: Sequence[str] = (),
               prohibited_purposes: Sequence[str] = ()) -> dict:
    """A plategate.policy/1 document valid from a minute before `now`."""
    return {
        "schema": "plategate.policy/1", "agency": "Test Police Department", "version": version,
        "issued_at": iso(now - 60), "not_before": iso(now - 60),
        "expires_at": iso(now + valid_for_s),
        "destinations": list(destinations),
        "prohibitions": {"classes": sorted(prohibited_classes),
                         "purposes": sorted(prohibited_purposes), "allowed_jurisdictions": []},
        "retention": {"nonhit_max_age_minutes": nonhit_max_age_minutes,
                      "hit_max_age_days": hit_max_age_days},
    }


class PolicyRig:
    """A real PolicyStore trusting a key kept in `state_dir`, plus a signer for it."""

    def __init__(self, state_dir: Path, audit) -> None:
        from cryptography.hazmat.primitives import serialization

        from agent.policy.signing import key_id
        from agent.policy.store import PolicyStore
        state_dir.mkdir(parents=True, exist_ok=True)
        key_path = state_dir / "signer.key"
        if key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        else:
            key = Ed25519PrivateKey.generate()
            key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        self.key = key
        self.key_id = key_id(key.public_key())
        self.store = PolicyStore(state_dir / "policy", {self.key_id: key.public_key()}, audit)

    def install(self, doc: dict, now: float | None = None) -> Policy:
        from agent.policy.bundle import sign_bundle
        return self.store.install(sign_bundle(doc, self.key, self.key_id),
                                  time.time() if now is None else now, source="test")


def make_read(index: int, now: float, *, hit: bool = False, prefix: str = "r",
              camera_id: str = "cam-1") -> ReadEvent:
    """A deterministic read: id `<prefix><index:08d>`, plate from the index."""
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    plate = f"{letters[index % 23]}{letters[(index // 23) % 23]}{index % 10000:04d}"
    hits = (HotlistHit("stolen-ct", 7, "stolen_vehicle", "NCIC"),) if hit else ()
    return ReadEvent(plate=plate, confidence=0.93, seen_at=now, camera_id=camera_id,
                     read_id=f"{prefix}{index:08d}", latitude=41.7658 + index * 1e-6,
                     longitude=-72.6734, hits=hits)


@dataclass
class Stack:
    """The delivery stage wired like the pipeline does: audit, policy, outbox, gate, service."""

    audit: object
    rig: PolicyRig
    outbox: object
    gate: object
    service: object
    stop: threading.Event

    def close(self, timeout: float = 10.0) -> None:
        self.service.stop(timeout)
        self.outbox.close()
        self.audit.close()


def build_stack(state_dir: Path, *, max_bytes: int = 512 * 1024 * 1024,
                hmac_keys: dict[str, bytes] | None = None, credentials: dict | None = None,
                start: bool = False, unit_id: str = "unit-test") -> Stack:
    """The stack; its reads are signed by a unit key kept in `state_dir` (unit.key), like
    a unit without `audit.unit_key` configured (`stack.gate.signer`)."""
    from agent.audit.log import AuditLog
    from agent.delivery.gate import EgressGate
    from agent.delivery.outbox import Outbox
    from agent.delivery.service import DeliveryService
    from agent.provenance.keys import DEFAULT_UNIT_KEY_NAME, load_unit_key_or_create
    from agent.provenance.messages import UnitSigner
    audit = AuditLog(state_dir / "audit.log")
    rig = PolicyRig(state_dir, audit)
    rig.store.load_persisted(time.time())
    outbox = Outbox(state_dir / "outbox.db", max_bytes, rig.store, audit, hmac_keys or {})
    outbox.start()
    signer = UnitSigner(unit_id, load_unit_key_or_create(state_dir / DEFAULT_UNIT_KEY_NAME))
    gate = EgressGate(rig.store, audit, outbox, signer=signer)
    stop = threading.Event()
    service = DeliveryService(outbox, gate, rig.store, audit, credentials or {}, stop)
    if start:
        service.start()
    return Stack(audit, rig, outbox, gate, service, stop)


def _append_sync(path: Path, line: str) -> None:
    with open(path, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_ranges(path: Path, tag: str) -> list[tuple[int, int]]:
    """(first, last) pairs of `tag` lines; a torn last line (killed mid-write) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == tag:
            try:
                out.append((int(parts[1]), int(parts[2])))
            except ValueError:
                continue
    return out


KILL_POINTS = ("before_flush", "after_flush", "after_commit")


def arm_self_kill(stack: Stack, seed: int) -> tuple[int, str]:
    """SIGKILL this process at one point of one accept() call, chosen from `seed`."""
    rng = random.Random(seed)
    target, point = rng.randint(1, 6), rng.choice(KILL_POINTS)
    state = {"calls": 0, "inside": False}
    real_accept, real_flush = stack.outbox.accept, stack.audit.flush

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def flush() -> None:
        armed = state["inside"] and state["calls"] == target
        if armed and point == "before_flush":
            die()
        real_flush()
        if armed and point == "after_flush":
            die()

    def accept(reads, now) -> None:
        state["calls"] += 1
        state["inside"] = True
        try:
            real_accept(reads, now)
        finally:
            state["inside"] = False
        if state["calls"] == target and point == "after_commit":
            die()

    stack.audit.flush = flush
    stack.outbox.accept = accept
    return target, point


def run_soak(state_dir: Path, broker_url: str, topic: str, count: int, batch: int,
             rate: float, drain_timeout: float, pin: str | None = None,
             self_kill: int | None = None) -> int:
    stack = build_stack(state_dir)
    if self_kill is not None:
        arm_self_kill(stack, self_kill)
    now = time.time()
    if stack.rig.store.active(now) is None:
        stack.rig.install(policy_doc(1, [destination_doc("soak", broker_url, topic, pin=pin)], now))
    stack.service.start()
    attempted = state_dir / "attempted.log"
    confirmed = state_dir / "confirmed.log"
    done = read_ranges(attempted, "A")
    index = (done[-1][1] + 1) if done else 0
    interval = batch / rate if rate > 0 else 0.0
    while index < count:
        last = min(count, index + batch) - 1
        _append_sync(attempted, f"A {index} {last}")
        now = time.time()
        stack.outbox.accept([make_read(i, now) for i in range(index, last + 1)], now)
        _append_sync(confirmed, f"C {index} {last}")
        index = last + 1
        if interval:
            time.sleep(interval)
    from agent.delivery.service import wait_until
    drained = wait_until(lambda: stack.outbox.depth("soak") == 0, drain_timeout)
    stack.close()
    print(json.dumps({"drained": drained, "accepted_up_to": index}))
    return 0 if drained else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.soak",
                                     description="Accept a stream of synthetic reads and deliver "
                                     "them to one MQTT destination (a fault-test harness).")
    parser.add_argument("--state", type=Path, required=True,
                        help="state directory (outbox, audit log, policy, progress logs)")
    parser.add_argument("--broker", required=True, help="destination broker URL (mqtts://host:port)")
    parser.add_argument("--pin", default=None,
                        help="SHA-256 (hex) of the broker's SubjectPublicKeyInfo, as a policy names it")
    parser.add_argument("--topic", default="plategate/soak/reads", help="destination topic")
    parser.add_argument("--count", type=int, default=2000, help="reads to accept in total")
    parser.add_argument("--batch", type=int, default=20, help="reads per accept() call")
    parser.add_argument("--rate", type=float, default=2000.0, help="reads per second (0 = flat out)")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds to wait for the queue to drain after the last read")
    parser.add_argument("--self-kill", type=int, default=None, metavar="SEED",
                        help="SIGKILL itself at a point of the accept path chosen from SEED")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    return run_soak(args.state, args.broker, args.topic, args.count, args.batch, args.rate,
                    args.drain_timeout, args.pin, args.self_kill)


if __name__ == "__main__":
    sys.exit(main())
