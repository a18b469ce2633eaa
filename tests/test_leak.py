"""Leak tests: brokers per destination, each with a `#` subscriber, random and hostile policies.

The oracle is the real policy engine: every message that reaches a broker must be allowed
for that destination by the policy version it names (a version installed no earlier than
the one the read was accepted under), on that version's topic, with exactly the fields
project_fields() gives under that version. A broker no policy ever names must see nothing.
"""
from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import jsonschema
import pytest

import agent
from agent.audit.records import expanded_records
from agent.delivery.records import encode_payload
from agent.policy.engine import decide
from agent.policy.minimise import project_fields
from helpers.mqtt import until_sentinel
from helpers.soak import build_stack, destination_doc, make_read, policy_doc

pytestmark = pytest.mark.integration

SCHEMA = json.loads((Path(agent.__file__).parent / "schemas" / "read-message.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
FIELD_CHOICES = ["plate", "confidence", "timestamp", "camera_id", "location"]
DESTS = ["city", "state", "feds"]
HMAC_KEYS = {d: f"key-{d}".encode() * 4 for d in DESTS}


def random_dest(rng: random.Random, dest_id: str, broker, version: int) -> dict | None:
    kind = rng.choice(["absent", "all", "all", "hits", "none", "prohibited"])
    if kind == "absent":
        return None
    fields = rng.sample(FIELD_CHOICES, rng.randint(1, len(FIELD_CHOICES)))
    topic = f"pg/{dest_id}/{rng.choice(['reads', 'alpr'])}"
    doc = destination_doc(dest_id, broker.url, topic, pin=broker.pin, fields=fields,
                          mode={"all": "all", "hits": "hotlist_hits", "none": "none",
                                "prohibited": "all"}[kind],
                          plate_form=rng.choice(["clear", "hmac_sha256"]),
                          location_precision_m=rng.choice([0, 500]),
                          dest_class="federal_immigration" if kind == "prohibited"
                          else "state_police")
    return doc


def check_messages(collectors, brokers_by_dest, versions, reads, accepted_under) -> int:
    """Assert every received message is allowed, on the right topic, with exactly its fields."""
    checked = 0
    for dest_id, collector in collectors.items():
        for msg in collector.snapshot():
            body = json.loads(msg.payload)
            VALIDATOR.validate(body)
            assert body["destination"] == dest_id, f"{dest_id}'s broker got {body['destination']}"
            read = reads[body["read_id"]]
            version = body["policy_version"]
            assert version >= accepted_under[read.read_id], "sent under an older policy"
            policy = versions[version]
            dest = policy.destination(dest_id)
            assert dest is not None, f"v{version} does not list {dest_id}"
            assert msg.topic == dest.transport.topic
            decision = decide(read, dest, policy, read.seen_at + 1)
            assert decision.allowed, f"{read.read_id} -> {dest_id} under v{version}: {decision}"
            expected = json.loads(encode_payload(project_fields(read, decision, dest,
                                                                HMAC_KEYS[dest_id])))
            assert body["read"] == expected, f"{read.read_id} -> {dest_id}: fields differ"
            if "plate" not in expected:
                assert read.plate.encode() not in msg.payload
            checked += 1
    return checked


@pytest.mark.parametrize("seed", [7, 2026])
def test_random_policies_never_leak(seed, broker_factory, collector_factory, tmp_path: Path):
    rng = random.Random(seed)
    brokers = {d: broker_factory() for d in DESTS}
    rogue = broker_factory()                     # named by no policy: must see nothing at all
    collectors = {d: collector_factory(b) for d, b in brokers.items()}
    rogue_sub = collector_factory(rogue)
    stack = build_stack(tmp_path / "unit", hmac_keys=HMAC_KEYS)
    stack.service.start()
    versions: dict[int, object] = {}
    reads: dict[str, object] = {}
    accepted_under: dict[str, int] = {}
    version = 0
    index = 0
    try:
        for step in range(14):
            if step % 2 == 0 or rng.random() < 0.3:
                version += 1
                docs = [doc for d in DESTS
                        if (doc := random_dest(rng, d, brokers[d], version)) is not None]
                policy = stack.rig.install(policy_doc(
                    version, docs, time.time(), prohibited_classes=["federal_immigration"]))
                versions[version] = policy
            now = time.time()
            batch = [make_read(index + i, now, hit=rng.random() < 0.3) for i in range(15)]
            index += len(batch)
            stack.outbox.accept(batch, now)
            for read in batch:
                reads[read.read_id] = read
                accepted_under[read.read_id] = version
            time.sleep(rng.uniform(0.0, 0.15))
        deadline = time.monotonic() + 30
        while any(stack.outbox.depth(d) for d in DESTS) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(stack.outbox.depth(d) for d in DESTS)
        for collector in collectors.values():
            until_sentinel(collector)           # everything routed to it has arrived
        checked = check_messages(collectors, brokers, versions, reads, accepted_under)
        assert checked > 0, "the random policies should have allowed something"
        assert until_sentinel(rogue_sub) == []
    finally:
        stack.close()


def test_backlog_revoked_or_narrowed_while_broker_down(broker_factory, collector_factory,
                                                        tmp_path: Path):
    """Queued reads obey the policy in force when the link comes back, not the one they were
    queued under: a revoked destination gets none of its backlog, a narrowed one only the
    narrowed fields."""
    city_b, state_b = broker_factory(persistence=True), broker_factory(persistence=True)
    city, state = (collector_factory(city_b, persistent=True),
                   collector_factory(state_b, persistent=True))
    stack = build_stack(tmp_path / "unit", hmac_keys=HMAC_KEYS)
    stack.service.start()
    try:
        wide = [destination_doc("city", city_b.url, "pg/city/reads", pin=city_b.pin),
                destination_doc("state", state_b.url, "pg/state/reads", pin=state_b.pin)]
        stack.rig.install(policy_doc(1, wide, time.time()))
        city_b.stop()
        state_b.stop()
        now = time.time()
        stack.outbox.accept([make_read(i, now) for i in range(40)], now)
        assert stack.outbox.depth("city") == 40 and stack.outbox.depth("state") == 40
        stack.rig.install(policy_doc(2, [
            destination_doc("state", state_b.url, "pg/state/reads", pin=state_b.pin, fields=["timestamp"])],
            time.time()))
        city_b.start()
        state_b.start()
        assert state.wait_count(40, timeout=30)
        purged = [r for r in expanded_records(stack.audit.path, "delivery.purged")
                  if r["fields"]["destination"] == "city"]
        assert len(purged) == 40                 # the city backlog was withdrawn, audited
        assert until_sentinel(city) == []
        for msg in state.snapshot():
            body = json.loads(msg.payload)
            assert set(body["read"]) == {"timestamp"} and body["policy_version"] == 2
    finally:
        stack.close()


def test_destination_moved_to_another_broker_takes_its_backlog_along(broker_factory,
                                                                     collector_factory,
                                                                     tmp_path: Path):
    """A policy that moves a destination to a new broker: the queued backlog goes to the new
    broker only, and the old one (back up later) never sees a byte of it."""
    old_b = broker_factory(persistence=True)
    new_b = broker_factory()
    old_sub = collector_factory(old_b, persistent=True)
    new_sub = collector_factory(new_b)
    stack = build_stack(tmp_path / "unit")
    stack.service.start()
    try:
        stack.rig.install(policy_doc(1, [destination_doc("city", old_b.url, "pg/city/reads", pin=old_b.pin)],
                                     time.time()))
        old_b.stop()
        now = time.time()
        stack.outbox.accept([make_read(i, now) for i in range(20)], now)
        stack.rig.install(policy_doc(2, [destination_doc("city", new_b.url, "pg/city/v2", pin=new_b.pin)],
                                     time.time()))
        old_b.start()
        assert new_sub.wait_count(20, timeout=30)
        assert {m.topic for m in new_sub.snapshot()} == {"pg/city/v2"}
        assert until_sentinel(old_sub) == []
    finally:
        stack.close()


@pytest.mark.integration
def test_revocation_while_a_batch_is_being_framed_sends_none_of_it(broker_factory,
                                                                     collector_factory,
                                                                     tmp_path: Path):
    """Regression: a sender checks a whole batch at the gate, then writes it in one send; a
    revocation that landed between the first check and the write let the messages checked
    before it go out after the destination was removed. The batch is now withdrawn when the
    policy changed while it was framed, and checked again under the new policy."""
    broker = broker_factory()
    sub = collector_factory(broker)
    stack = build_stack(tmp_path / "unit")
    stack.rig.install(policy_doc(1, [destination_doc("city", broker.url, "pg/city/reads", pin=broker.pin)],
                                 time.time()))
    gate = stack.gate
    real_release = gate.release
    revoked = threading.Event()

    def check_then_revoke(delivery, now, transport=None):
        result = real_release(delivery, now, transport)
        if not revoked.is_set():          # the first message passed under policy 1 ...
            revoked.set()                 # ... and policy 2 (city removed) lands right after
            stack.rig.install(policy_doc(2, [destination_doc("other", broker.url, "pg/o", pin=broker.pin)],
                                         time.time()))
        return result

    gate.release = check_then_revoke
    try:
        now = time.time()
        stack.outbox.accept([make_read(i, now) for i in range(20)], now)
        stack.service.start()
        assert revoked.wait(10)
        deadline = time.monotonic() + 10
        while stack.outbox.depth("city") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stack.outbox.depth("city") == 0          # purged by the re-check, audited
        assert [m for m in until_sentinel(sub) if m.topic == "pg/city/reads"] == []
    finally:
        stack.close()
