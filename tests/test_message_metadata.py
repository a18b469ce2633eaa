"""Issue 14 item 10: a hidden hit must not leak through message metadata.

Under a policy that lets the state destination have every read but not hits for a
prohibited purpose (immigration), the payload of a hit read correctly shows no hit; its
MQTT 5 Message Expiry Interval used to be the hit retention (7 days) instead of the
non-hit one (1 hour), so the destination learnt which reads matched the immigration list.
Here a real broker's subscriber compares every MQTT property of the two messages.
"""
from __future__ import annotations

import json
import time

import pytest

from agent.reads import HotlistHit, ReadEvent
from helpers.soak import build_stack, destination_doc, policy_doc

IMMIGRATION = HotlistHit("ice-list", 3, "immigration_enforcement", "federal")
STOLEN = HotlistHit("stolen-ct", 7, "stolen_vehicle", "NCIC")
# Values that differ from read to read by nature; everything else must be equal.
READ_SPECIFIC = {"read_id", "plate", "timestamp", "location", "plate_crop", "vehicle_image",
                 "confidence"}
# Envelope values that differ per message by nature: the unit's signature over the read.
MESSAGE_SPECIFIC = {"read_id", "signature"}


def _read(read_id: str, plate: str, seen_at: float, hits=()) -> ReadEvent:
    return ReadEvent(plate, 0.9, seen_at, "cam-1", read_id=read_id, latitude=41.7,
                     longitude=-72.6, hits=hits)


def _shape(message) -> tuple:
    """Everything observable about a message except read-specific values."""
    body = json.loads(message.payload)
    read = body.pop("read")
    props = dict(message.properties)
    users = [(k, v) for k, v in props.pop("UserProperty", []) if k != "read_id"]
    expiry = props.pop("MessageExpiryInterval", None)
    return (message.topic, message.qos, message.retain, sorted(props.items()), users,
            expiry // 10 if expiry else None,            # sent within a second or two
            {k: v for k, v in body.items() if k not in MESSAGE_SPECIFIC},
            sorted(read), {k: v for k, v in read.items() if k not in READ_SPECIFIC})


@pytest.mark.integration
def test_hidden_hit_and_non_hit_messages_have_identical_properties(broker_factory,
                                                                   collector_factory, tmp_path):
    broker = broker_factory()
    sub = collector_factory(broker)
    stack = build_stack(tmp_path / "unit")
    try:
        stack.rig.install(policy_doc(
            1, [destination_doc("state", broker.url, "pg/state/reads", dest_class="state_police",
                                purposes=["stolen_vehicle"], pin=broker.pin)],
            time.time(), prohibited_purposes=["immigration_enforcement"],
            nonhit_max_age_minutes=60, hit_max_age_days=7))
        stack.service.start()
        now = time.time()
        seen = now - 30
        reads = [_read("plain", "PLN0001", seen), _read("hidden", "HID0002", seen, (IMMIGRATION,)),
                 _read("shared", "STL0003", seen, (STOLEN,))]
        stack.outbox.accept(reads, now)
        assert sub.wait_count(3, timeout=30)
        by_id = {json.loads(m.payload)["read_id"]: m for m in sub.snapshot()}
        plain, hidden, shared = by_id["plain"], by_id["hidden"], by_id["shared"]
        assert _shape(hidden) == _shape(plain)
        assert 3600 - 40 <= hidden.message_expiry_interval <= 3600 - 25
        assert json.loads(hidden.payload)["read"].keys() == json.loads(plain.payload)["read"].keys()
        # A hit the destination may know of is a hit to it, retention included.
        assert "hits" in json.loads(shared.payload)["read"]
        assert shared.message_expiry_interval > 6 * 86400
        # The audit log still says which read was a hit.
        stack.audit.flush()
        from agent.audit.records import expanded_records
        accepted = {r["fields"]["read_id"]: r["fields"]
                    for r in expanded_records(stack.audit.path, "read.accepted")}
        assert accepted["hidden"]["hit"] is True and accepted["plain"]["hit"] is False
    finally:
        stack.close()
