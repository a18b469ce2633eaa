"""The accept stage under a full or failing outbox: hits are never given up, non-hits are counted."""
from __future__ import annotations

import queue
import threading
import time

from agent.audit.log import AuditLog
from agent.delivery.outbox import Outbox, OutboxError, OutboxFull
from agent.policy.store import PolicyStore
from agent.reads import HotlistHit, ReadEvent
from agent.runtime.stages import AcceptStage

HIT = (HotlistHit(list_id="stolen", list_version=1, purpose="stolen_vehicle", source="NCIC"),)


class Finished:
    """An upstream that has already ended, so the stage stops once its queue is drained."""

    finished = threading.Event()
    finished.set()


def make_stage(tmp_path, reads):
    audit = AuditLog(tmp_path / "audit.jsonl")
    policies = PolicyStore(tmp_path / "policy", {}, audit)
    outbox = Outbox(tmp_path / "outbox.sqlite", 1 << 30, policies, audit, {})
    inbox: queue.Queue = queue.Queue()
    for read in reads:
        inbox.put(read)
    stage = AcceptStage(threading.Event(), Finished(), inbox, outbox)
    return stage, outbox, audit


def test_disk_failure_keeps_hits_and_retries_them_until_the_disk_recovers(tmp_path):
    """Regression: a failed outbox write must not drop hits (the outbox commits nothing then)."""
    now = time.time()
    reads = [ReadEvent("NON0001", 0.9, now, "cam"), ReadEvent("HIT0002", 0.9, now, "cam", hits=HIT),
             ReadEvent("NON0003", 0.9, now, "cam")]
    stage, outbox, audit = make_stage(tmp_path, reads)
    original, failures = outbox._write, {"left": 2}

    def failing_write(work, what, *args, **kwargs):
        if what == "accept" and failures["left"] > 0:
            failures["left"] -= 1
            raise OutboxError("disk I/O error (injected)")
        return original(work, what, *args, **kwargs)

    outbox._write = failing_write
    stage.RETRY_PAUSE_S = 0.05   # the pause between offers; the offers themselves are the test
    stage.start()
    assert stage.join(timeout=20)
    assert not stage.fatal.is_set()
    assert outbox.read_ids() == {reads[1].read_id}
    assert stage.refused_full == 2 and stage.accepted == 1
    outbox.close()
    audit.close()


def test_size_cap_refuses_only_non_hits_and_counts_them(tmp_path):
    now = time.time()
    reads = [ReadEvent(f"P{i:05d}", 0.9, now, "cam", vehicle_jpeg=b"x" * 200_000, hits=HIT if i % 2 else ())
             for i in range(40)]
    stage, outbox, audit = make_stage(tmp_path, reads)
    outbox.max_bytes = 2_000_000
    stage.start()
    assert stage.join(timeout=20)
    stored = outbox.read_ids()
    assert {r.read_id for r in reads if r.is_hit} <= stored
    assert stage.refused_full == len(reads) - len(stored) > 0
    assert stage.accepted == len(stored)
    outbox.close()
    audit.close()
