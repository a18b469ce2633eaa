"""The durable outbox with the real policy engine, policy store and audit log (no broker)."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from agent.audit.records import expanded_records
from agent.delivery.outbox import Outbox, OutboxFull
from helpers.soak import PolicyRig, build_stack, destination_doc, make_read, policy_doc

BROKER = "mqtts://127.0.0.1:1"   # never contacted: these tests run no sender
PIN = "0" * 64                  # the pin every destination needs (never checked here)


def audit_events(stack, event: str | None = None) -> list[dict]:
    stack.audit.flush()
    return expanded_records(stack.audit.path, event)


def dests(*docs: dict) -> list[dict]:
    return list(docs)


def install(stack, version: int, *dest_docs: dict, **kwargs):
    return stack.rig.install(policy_doc(version, dest_docs, time.time(), **kwargs))


def payloads(outbox: Outbox, dest_id: str) -> list[dict]:
    return [json.loads(d.payload) for d in outbox.next_batch(dest_id, 0, 100000)]


def test_accept_is_durable_and_audited(stack, tmp_path: Path):
    install(stack, 1, destination_doc("city", BROKER, "t/city", pin=PIN),
            destination_doc("feds", BROKER, "t/feds", pin=PIN, dest_class="federal_immigration",
                            purposes=["immigration_enforcement"]),
            prohibited_classes=["federal_immigration"])
    now = time.time()
    reads = [make_read(i, now) for i in range(5)]
    stack.outbox.accept(reads, now)
    # Durable: a second connection (another process after a power cut) sees them.
    conn = sqlite3.connect(tmp_path / "state" / "outbox.db")
    rows = conn.execute("SELECT destination, read_id FROM deliveries ORDER BY seq").fetchall()
    assert rows == [("city", r.read_id) for r in reads]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    decisions = audit_events(stack, "decision")
    assert {(d["fields"]["read_id"], d["fields"]["destination"], d["fields"]["allowed"])
            for d in decisions} == {(r.read_id, dest, dest == "city")
                                    for r in reads for dest in ("city", "feds")}
    assert stack.outbox.depth("city") == 5 and stack.outbox.depth("feds") == 0
    assert stack.outbox.integrity_check() == "ok"


def test_accept_twice_is_idempotent(stack):
    install(stack, 1, destination_doc("city", BROKER, "t/city", pin=PIN))
    now = time.time()
    reads = [make_read(i, now) for i in range(3)]
    stack.outbox.accept(reads, now)
    stack.outbox.accept(reads, now)
    assert stack.outbox.depth("city") == 3


def test_payload_has_only_the_rule_fields_and_keyed_plate(tmp_path: Path):
    s = build_stack(tmp_path / "s", hmac_keys={"state": b"k" * 32})
    try:
        s.rig.install(policy_doc(1, [
            destination_doc("state", BROKER, "t/state", pin=PIN, fields=["plate", "timestamp"],
                            plate_form="hmac_sha256"),
            destination_doc("city", BROKER, "t/city", pin=PIN, fields=["plate", "location"],
                            location_precision_m=1000)], time.time()))
        now = time.time()
        s.outbox.accept([make_read(1, now)], now)
        (state,) = payloads(s.outbox, "state")
        assert set(state) == {"plate_hmac", "timestamp"}
        (city,) = payloads(s.outbox, "city")
        assert set(city) == {"plate", "location"} and city["location"]["precision_m"] == 1000
    finally:
        s.outbox.close()
        s.audit.close()


def test_missing_hmac_key_fails_closed(stack):
    install(stack, 1, destination_doc("state", BROKER, "t/state", pin=PIN, plate_form="hmac_sha256"))
    now = time.time()
    stack.outbox.accept([make_read(1, now)], now)
    assert stack.outbox.depth("state") == 0
    (decision,) = audit_events(stack, "decision")
    assert decision["fields"]["allowed"] is False and "no_hmac_key" in decision["fields"]["reason"]


def test_reads_without_policy_are_held_then_decided(stack):
    now = time.time()
    stack.outbox.accept([make_read(i, now) for i in range(4)], now)
    assert stack.outbox.held_count() == 4 and stack.outbox.depths() == {}
    install(stack, 1, destination_doc("city", BROKER, "t/city", pin=PIN))
    assert stack.outbox.held_count() == 0
    assert [d.read_id for d in stack.outbox.next_batch("city", 0, 10)] == \
        [make_read(i, now).read_id for i in range(4)]


def test_policy_removing_a_destination_purges_its_backlog(stack):
    install(stack, 1, destination_doc("city", BROKER, "t/city", pin=PIN),
            destination_doc("state", BROKER, "t/state", pin=PIN))
    now = time.time()
    stack.outbox.accept([make_read(i, now) for i in range(3)], now)
    install(stack, 2, destination_doc("city", BROKER, "t/city", pin=PIN))
    assert stack.outbox.depth("state") == 0 and stack.outbox.depth("city") == 3
    purged = audit_events(stack, "delivery.purged")
    assert sorted(p["fields"]["read_id"] for p in purged) == [make_read(i, now).read_id
                                                               for i in range(3)]
    assert all(p["fields"]["destination"] == "state" for p in purged)


def test_policy_narrowing_fields_reminimises_the_backlog(stack):
    install(stack, 1, destination_doc("city", BROKER, "t/city", pin=PIN))
    now = time.time()
    stack.outbox.accept([make_read(i, now) for i in range(3)], now)
    assert all("plate" in p for p in payloads(stack.outbox, "city"))
    install(stack, 2, destination_doc("city", BROKER, "t/city", pin=PIN, fields=["timestamp"]))
    assert [set(p) for p in payloads(stack.outbox, "city")] == [{"timestamp"}] * 3
    assert {d.policy_version for d in stack.outbox.next_batch("city", 0, 10)} == {2}


def test_policy_to_hits_only_purges_non_hits(stack):
    install(stack, 1, destination_doc("city", BROKER, "t/city", pin=PIN))
    now = time.time()
    stack.outbox.accept([make_read(1, now), make_read(2, now, hit=True)], now)
    install(stack, 2, destination_doc("city", BROKER, "t/city", pin=PIN, mode="hotlist_hits"))
    assert [d.read_id for d in stack.outbox.next_batch("city", 0, 10)] == [make_read(2, now).read_id]


def test_expired_policy_holds_the_backlog(stack):
    """Fail closed: when the policy expires, queued deliveries are withdrawn, reads held."""
    install(stack, 1, destination_doc("city", BROKER, "t/city", pin=PIN), valid_for_s=3600)
    now = time.time()
    stack.outbox.accept([make_read(i, now) for i in range(2)], now)
    assert stack.rig.store.active(now + 7200) is None       # notices expiry, notifies
    assert stack.outbox.depth("city") == 0 and stack.outbox.held_count() == 2
    install(stack, 2, destination_doc("city", BROKER, "t/city", pin=PIN))
    assert stack.outbox.depth("city") == 2


def test_retention_deletes_old_reads_and_audits(stack):
    install(stack, 1, destination_doc("city", BROKER, "t/city", pin=PIN), nonhit_max_age_minutes=10,
            hit_max_age_days=1)
    now = time.time()
    stack.outbox.accept([make_read(1, now - 3600), make_read(2, now), make_read(3, now - 3600,
                                                                                  hit=True)], now)
    assert stack.outbox.depth("city") == 2   # read 1 was already past retention: never queued
    deleted = stack.outbox.purge_expired(now + 11 * 60)
    assert deleted == 1
    assert stack.outbox.read_ids() == {make_read(3, now).read_id}
    (rec,) = audit_events(stack, "retention.deleted")
    assert rec["fields"]["read_ids"] == [make_read(2, now).read_id]
    # Held reads expire too (no policy ever seen -> fallback retention).


def test_expired_read_is_gone_from_the_files_too(stack, tmp_path: Path):
    """Retention means not kept on disk either: no trace of the plate in the db or WAL."""
    import dataclasses
    install(stack, 1, destination_doc("city", BROKER, "t/city", pin=PIN), nonhit_max_age_minutes=10)
    now = time.time()
    read = dataclasses.replace(make_read(1, now), plate="QXJ4471Z",
                               plate_crop_jpeg=b"JPEGCROP-QXJ4471Z" * 200)
    stack.outbox.accept([read], now)
    files = lambda: b"".join(p.read_bytes() for p in (tmp_path / "state").glob("outbox.db*"))
    assert b"QXJ4471Z" in files()
    assert stack.outbox.purge_expired(now + 3600) == 1
    assert b"QXJ4471Z" not in files()


def test_rule_max_age_purges_queued_deliveries(stack):
    install(stack, 1, destination_doc("city", BROKER, "t/city", pin=PIN, max_age_s=60))
    now = time.time()
    stack.outbox.accept([make_read(1, now)], now)
    stack.outbox.purge_expired(now + 120)
    assert stack.outbox.depth("city") == 0 and stack.outbox.read_ids() == set()
    (rec,) = audit_events(stack, "delivery.purged")
    assert rec["fields"]["reason"] == "max_age"


def test_full_outbox_refuses_non_hits_keeps_hits_and_alarms(tmp_path: Path, caplog):
    s = build_stack(tmp_path / "s", max_bytes=6000)
    try:
        s.rig.install(policy_doc(1, [destination_doc("city", BROKER, "t/city", pin=PIN)], time.time()))
        now = time.time()
        accepted, refused = [], []
        for i in range(40):
            try:
                s.outbox.accept([make_read(i, now)], now)
                accepted.append(i)
            except OutboxFull as exc:
                assert not exc.hits_refused
                refused.extend(exc.refused)
        assert refused and accepted, "the cap should have been reached part way"
        assert s.outbox.stats()["full"] is True
        assert any("ALARM outbox full" in r.getMessage() for r in caplog.records)
        # Hits still go in: the oldest non-hits make room, each eviction audited.
        hits = [make_read(1000 + i, now, hit=True) for i in range(5)]
        for hit in hits:
            s.outbox.accept([hit], now)
        stored = s.outbox.read_ids()
        assert {h.read_id for h in hits} <= stored
        evicted = audit_events(s, "outbox.evicted")
        assert evicted and all(not e["fields"]["read_id"].startswith("r0000100")
                               for e in evicted)
        assert len(audit_events(s, "outbox.full")) == 1
    finally:
        s.outbox.close()
        s.audit.close()


def test_outbox_survives_reopen_with_sizes(tmp_path: Path):
    s = build_stack(tmp_path / "s")
    s.rig.install(policy_doc(1, [destination_doc("city", BROKER, "t/city", pin=PIN)], time.time()))
    now = time.time()
    s.outbox.accept([make_read(i, now) for i in range(10)], now)
    used = s.outbox.stats()["bytes"]
    s.outbox.close()
    s.audit.close()
    s2 = build_stack(tmp_path / "s")
    try:
        assert s2.outbox.stats()["bytes"] == used
        assert s2.outbox.depth("city") == 10
        assert s2.rig.store.active(time.time()) is not None
    finally:
        s2.outbox.close()
        s2.audit.close()


def test_backlog_is_rechecked_at_start_up(tmp_path: Path):
    """A policy installed while the outbox was closed still governs what it had queued."""
    s = build_stack(tmp_path / "s")
    s.rig.install(policy_doc(1, [destination_doc("city", BROKER, "t/city", pin=PIN),
                                 destination_doc("state", BROKER, "t/state", pin=PIN)], time.time()))
    now = time.time()
    s.outbox.accept([make_read(i, now) for i in range(3)], now)
    s.outbox.close()
    # Policy 2 lands while the outbox is off: installed through a store nobody listens to.
    PolicyRig(tmp_path / "s", s.audit).install(
        policy_doc(2, [destination_doc("city", BROKER, "t/city", pin=PIN)], time.time()))
    s.audit.close()
    s2 = build_stack(tmp_path / "s")
    try:
        assert s2.outbox.depth("state") == 0 and s2.outbox.depth("city") == 3
    finally:
        s2.outbox.close()
        s2.audit.close()


def test_a_reads_evidence_is_stored_with_it_and_rows_from_before_read_as_frame():
    """ReadEvent.evidence (which tracker rule let the pass count, issue 16) survives the outbox's
    codec; a row stored before the field existed decodes as "frame"."""
    import dataclasses

    from agent.delivery.records import decode_read, encode_read

    read = dataclasses.replace(make_read(1, 1_700_000_000.0), evidence="detection")
    assert decode_read(encode_read(read)) == read
    old = json.loads(encode_read(read))
    del old["evidence"]
    assert decode_read(json.dumps(old).encode()).evidence == "frame"
