"""Issue 14 item 11: after any crash, the audit log and the outbox agree.

The outbox flushes `read.accepted` to the audit log and then commits. A process that dies
between the two leaves an audit record for a read no outbox holds. At the next start the
outbox finds such records in the log's tail and records `read.lost` for them; no later
record contradicts it. The SIGKILL test kills a busy delivery harness 100 times at random
points (half of them at chosen points inside the accept path) and reconciles the audit
log against the outbox and what the broker received.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.audit.log import verify_log
from agent.audit.records import expanded_records
from helpers.soak import build_stack, destination_doc, make_read, policy_doc, read_ranges

TESTS = Path(__file__).resolve().parent
BROKER = "mqtts://127.0.0.1:1"  # never contacted by the in-process test
PIN = "0" * 64
KILLS = int(os.environ.get("PLATEGATE_TEST_KILLS", "100"))
COUNT = 200_000                 # more than any run gets through: every run is killed mid-stream


class SimulatedCrash(BaseException):
    """Stands for SIGKILL in-process: nothing after it runs, no except clause catches it."""


def _lost(records: list[dict]) -> dict[str, int]:
    return {read_id: r["seq"] for r in records if r["event"] == "read.lost"
            for read_id in r["fields"]["read_ids"]}


def test_a_crash_between_audit_flush_and_commit_is_recorded_as_loss_at_restart(tmp_path):
    state = tmp_path / "unit"
    first = build_stack(state)
    first.rig.install(policy_doc(1, [destination_doc("city", BROKER, "t/city", pin=PIN)], time.time()))
    now = time.time()
    first.outbox.accept([make_read(i, now) for i in range(3)], now)      # committed
    real_flush = first.audit.flush

    def flush_then_die() -> None:
        real_flush()
        raise SimulatedCrash()

    first.audit.flush = flush_then_die
    with pytest.raises(SimulatedCrash):
        first.outbox.accept([make_read(i, now) for i in range(3, 6)], now)
    # The process is gone: nothing of it is closed. A new one starts on the same state.
    second = build_stack(state)
    try:
        records = expanded_records(state / "audit.log")
        accepted = {r["fields"]["read_id"] for r in records if r["event"] == "read.accepted"}
        assert accepted == {f"r{i:08d}" for i in range(6)}
        assert set(_lost(records)) == {f"r{i:08d}" for i in range(3, 6)}
        assert second.outbox.read_ids() == {f"r{i:08d}" for i in range(3)}
    finally:
        second.outbox.close()
        second.audit.close()
    third = build_stack(state)          # a clean restart finds nothing new to reconcile
    try:
        assert len([r for r in expanded_records(state / "audit.log")
                    if r["event"] == "read.lost"]) == 1
    finally:
        third.outbox.close()
        third.audit.close()
    assert verify_log(state / "audit.log").ok


def _soak(state: Path, broker, self_kill: int | None = None,
          count: int = COUNT) -> subprocess.Popen:
    args = [sys.executable, "-m", "helpers.soak", "--state", str(state), "--broker", broker.url,
            "--pin", broker.pin,
            "--count", str(count), "--batch", "20", "--rate", "2000", "--drain-timeout", "60"]
    if self_kill is not None:
        args += ["--self-kill", str(self_kill)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=TESTS,
                            env={**os.environ, "PYTHONUNBUFFERED": "1",
                                 "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])})


@pytest.mark.integration
@pytest.mark.slow
def test_many_sigkills_leave_audit_and_outbox_in_agreement(broker_factory, collector_factory,
                                                           tmp_path):
    broker = broker_factory()
    sub = collector_factory(broker)
    state = tmp_path / "unit"
    rng = random.Random(20261205)
    attempted_before = 0
    for run in range(KILLS):
        if run % 2 == 0:
            proc = _soak(state, broker, self_kill=rng.randrange(1 << 30))
        else:
            proc = _soak(state, broker)
            # SIGKILL at a random moment after this run started accepting.
            deadline = time.monotonic() + 60
            while (proc.poll() is None and time.monotonic() < deadline
                   and len(read_ranges(state / "attempted.log", "A")) <= attempted_before):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, f"run {run} ended by itself"
        attempted_before = len(read_ranges(state / "attempted.log", "A"))

    # Let the survivors of every kill drain: a last run that offers nothing new.
    ranges = read_ranges(state / "attempted.log", "A")
    final = _soak(state, broker, count=ranges[-1][1] + 1)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()[-3000:]
    assert json.loads(out.decode().strip().splitlines()[-1])["drained"] is True

    assert verify_log(state / "audit.log").ok
    records = expanded_records(state / "audit.log")
    lost = _lost(records)
    should_hold = {r["fields"]["read_id"] for r in records if r["event"] == "read.accepted"
                   and (r["fields"].get("held") or r["fields"].get("destinations"))}
    conn = sqlite3.connect(state / "outbox.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    in_outbox = {row[0] for row in conn.execute("SELECT read_id FROM reads")}
    conn.close()
    confirmed = {f"r{i:08d}" for a, b in read_ranges(state / "confirmed.log", "C")
                 for i in range(a, b + 1)}
    sub.wait_for(lambda msgs: {json.loads(m.payload)["read_id"] for m in msgs}
                 >= (should_hold - set(lost) - in_outbox), timeout=60)
    delivered = {json.loads(m.payload)["read_id"] for m in sub.snapshot()}
    # Every read the audit calls accepted is in the outbox, delivered, or recorded as lost.
    missing = should_hold - in_outbox - delivered - set(lost)
    assert not missing, sorted(missing)[:10]
    # A lost read was never delivered, and no record after its loss says otherwise.
    assert not set(lost) & delivered
    for r in records:
        read_id = r["fields"].get("read_id")
        if read_id in lost and r["event"] in ("read.accepted", "delivery.sent", "decision"):
            assert r["seq"] < lost[read_id], r
    # Every read the harness was told was accepted reached the broker.
    assert confirmed <= delivered | in_outbox
    # The window between the audit flush and the commit was really hit.
    assert lost, "no kill landed between the audit flush and the outbox commit"


def test_an_outbox_without_an_audit_seq_reconciles_nothing_old(tmp_path):
    """Upgrade: an outbox made before it recorded its audit seq must not call every read
    delivered long ago lost; it starts counting at its first start."""
    import sqlite3 as sql
    state = tmp_path / "unit"
    first = build_stack(state)
    first.rig.install(policy_doc(1, [destination_doc("city", BROKER, "t/city", pin=PIN)], time.time()))
    now = time.time()
    first.outbox.accept([make_read(i, now) for i in range(3)], now)
    first.outbox.close()
    first.audit.close()
    conn = sql.connect(state / "outbox.db")
    conn.execute("DELETE FROM deliveries")
    conn.execute("DELETE FROM reads")                       # as if delivered long ago
    conn.execute("DELETE FROM meta WHERE key='audited_seq'")  # as if made before the check
    conn.commit()
    conn.close()
    second = build_stack(state)
    try:
        assert _lost(expanded_records(state / "audit.log")) == {}
    finally:
        second.outbox.close()
        second.audit.close()
