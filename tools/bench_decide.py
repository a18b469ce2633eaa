#!/usr/bin/env python3
"""Benchmark: policy decisions per second on one core. Prints JSON.

Decides a realistic mix (non-hit and hit reads against every destination of the CT Trust Act
example, so allowed, hits-only denials and prohibition denials all run) in one thread.

    nice -n 10 .venv/bin/python tools/bench_decide.py [--seconds 3] [--policy FILE.json] [--audit]

With --audit each decision is also recorded in a real AuditLog (signed checkpoints every
1000 records, flush + fsync every 256 decisions, in a temp dir): the figure the outbox sees.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.audit.log import AuditLog  # noqa: E402
from agent.audit.records import record_decision  # noqa: E402
from agent.policy.bundle import parse_policy_json  # noqa: E402
from agent.policy.signing import load_private_key  # noqa: E402
from agent.policy.engine import decide  # noqa: E402
from agent.reads import HotlistHit, ReadEvent  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="decisions per second on one core (JSON output)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to run each round (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is reported (default 3)")
    parser.add_argument("--policy", type=Path, default=ROOT / "firmware_config/policies/ct-trust-act.json",
                        help="policy JSON or bundle to decide under (signature not checked)")
    parser.add_argument("--audit", action="store_true",
                        help="also record every decision in an AuditLog (flush every 256 decisions)")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    policy = parse_policy_json(args.policy.read_bytes())
    now = policy.not_before + 86400.0
    hit = (HotlistHit("ct-stolen", 3, "stolen_vehicle", "bench"),)
    reads = [ReadEvent(f"ABC{i:04d}", 0.9, now - (i % 50), "cam-1", latitude=41.7, longitude=-72.6,
                       hits=hit if i % 10 == 0 else ()) for i in range(1000)]
    pairs = [(r, d) for r in reads for d in policy.destinations]
    rates = []
    tmp = tempfile.TemporaryDirectory(dir=ROOT)
    audit = None
    if args.audit:
        key = load_private_key(ROOT / "firmware_config/policies/test-keys/unit-TEST-ONLY.key")
        audit = AuditLog(Path(tmp.name) / "audit.jsonl", key, checkpoint_every=1000)
    for _ in range(args.rounds):
        n = 0
        start = time.perf_counter()
        deadline = start + args.seconds
        while time.perf_counter() < deadline:
            if audit is None:
                for read, dest in pairs:
                    decide(read, dest, policy, now)
            else:
                for i, (read, dest) in enumerate(pairs):
                    record_decision(audit, read, dest, decide(read, dest, policy, now))
                    if i % 256 == 255:
                        audit.flush()
            n += len(pairs)
        rates.append(n / (time.perf_counter() - start))
    if audit is not None:
        audit.close()
    tmp.cleanup()
    print(json.dumps({
        "benchmark": "policy.decide+audit" if args.audit else "policy.decide", "policy": args.policy.name, "destinations": len(policy.destinations),
        "decisions_per_s": round(max(rates)), "rounds_per_s": [round(r) for r in rates],
        "mix": "10% hits, all destinations", "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cores_used": 1,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
