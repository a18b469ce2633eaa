"""The egress gate re-decides every message against the policy active at send time."""
from __future__ import annotations

import json
import time

from agent.audit.records import expanded_records
from agent.delivery.records import encode_payload
from helpers.soak import destination_doc, make_read, policy_doc
from agent.policy.model import Transport

BROKER = "mqtts://127.0.0.1:1"   # never contacted
PIN = "0" * 64


def audit_events(stack, event: str) -> list[dict]:
    stack.audit.flush()
    return expanded_records(stack.audit.path, event)


def queue_one(stack, **rule) -> tuple:
    policy = stack.rig.install(policy_doc(1, [destination_doc("city", BROKER, "t/city", pin=PIN, **rule)],
                                          time.time()))
    now = time.time()
    stack.outbox.accept([make_read(1, now)], now)
    (delivery,) = stack.outbox.next_batch("city", 0, 10)
    return policy, delivery


def test_allowed_delivery_passes(stack):
    policy, delivery = queue_one(stack)
    decision = stack.gate.check(delivery, time.time(), policy.destination("city").transport)
    assert decision.allowed
    assert stack.outbox.depth("city") == 1


def test_delivery_to_a_removed_destination_is_refused_and_purged(stack):
    """A delivery fetched before a policy change must not go out after it."""
    policy, delivery = queue_one(stack)
    stack.rig.install(policy_doc(2, [destination_doc("other", BROKER, "t/other", pin=PIN)], time.time()))
    decision = stack.gate.check(delivery, time.time(), policy.destination("city").transport)
    assert not decision.allowed
    assert stack.outbox.depth("city") == 0
    refused = audit_events(stack, "delivery.refused")
    assert refused[-1]["fields"]["read_id"] == delivery.read_id


def test_stale_payload_with_fields_no_longer_allowed_is_refused(stack):
    policy, delivery = queue_one(stack)
    # Policy 2 narrows to timestamp only; the in-hand delivery still carries the plate.
    stack.rig.install(policy_doc(2, [destination_doc("city", BROKER, "t/city", pin=PIN,
                                                     fields=["timestamp"])], time.time()))
    decision = stack.gate.check(delivery, time.time())
    assert not decision.allowed and decision.rule_id == "fields"
    # The outbox re-check re-minimised the queued copy, and that one passes.
    (fresh,) = stack.outbox.next_batch("city", 0, 10) or [None]
    assert fresh is None or set(json.loads(fresh.payload)) == {"timestamp"}


def test_stale_clear_plate_refused_when_rule_now_hashes(stack):
    policy, delivery = queue_one(stack)
    stack.rig.install(policy_doc(2, [destination_doc("city", BROKER, "t/city", pin=PIN,
                                                     plate_form="hmac_sha256")], time.time()))
    assert not stack.gate.check(delivery, time.time()).allowed


def test_tampered_payload_is_refused(stack):
    policy, delivery = queue_one(stack, fields=["timestamp"])
    forged = delivery._replace(payload=encode_payload(
        {"timestamp": "2026-01-01T00:00:00.000Z", "plate": "ABC123"}))
    decision = stack.gate.check(forged, time.time())
    assert not decision.allowed and "plate" in decision.reason


def test_other_transport_is_refused(stack):
    policy, delivery = queue_one(stack)
    impostor = Transport("mqtts://127.0.0.1:2", "t/city", "0" * 64, None)
    decision = stack.gate.check(delivery, time.time(), impostor)
    assert not decision.allowed and decision.rule_id == "transport"


def test_read_past_rule_max_age_is_refused(stack):
    policy, delivery = queue_one(stack, max_age_s=30)
    assert not stack.gate.check(delivery, time.time() + 60).allowed


def test_no_policy_refuses_but_keeps_the_read(stack):
    """Fail closed without losing the read: it is held for the next valid policy."""
    stack.rig.install(policy_doc(1, [destination_doc("city", BROKER, "t/city", pin=PIN)], time.time(),
                                 valid_for_s=3600))
    now = time.time()
    stack.outbox.accept([make_read(1, now)], now)
    (delivery,) = stack.outbox.next_batch("city", 0, 10)
    decision = stack.gate.check(delivery, now + 7200)
    assert not decision.allowed
    assert stack.outbox.read_ids() == {delivery.read_id}


def test_stale_copy_refused_by_the_gate_does_not_purge_the_renarrowed_read(stack):
    """Regression: a sender holds deliveries fetched before a policy change; the gate refused
    the stale copy (fields no longer allowed) and purged the row by seq, although the outbox
    re-check had just re-minimised that row under the new rule. An allowed read was lost.
    Now a refusal purges only the copy it checked; the current row stays and passes."""
    policy, delivery = queue_one(stack)
    stack.rig.install(policy_doc(2, [destination_doc("city", BROKER, "t/city", pin=PIN,
                                                     fields=["timestamp"])], time.time()))
    decision, kept = stack.gate.check_for_send(delivery, time.time(),
                                               policy.destination("city").transport)
    assert not decision.allowed and decision.rule_id == "fields" and kept
    (fresh,) = stack.outbox.next_batch("city", 0, 10)
    assert set(json.loads(fresh.payload)) == {"timestamp"}
    now = time.time()
    assert stack.gate.check(fresh, now, stack.rig.store.active(now).destination("city").transport).allowed


def test_destination_moved_mid_batch_keeps_its_queued_reads(stack):
    """Regression: the same race when a policy moves a destination to another broker: the
    in-hand copy (old transport) was refused and its row, already re-bound by the re-check to
    the new broker, purged. The read must stay queued for the new link."""
    policy, delivery = queue_one(stack)
    old_transport = policy.destination("city").transport
    stack.rig.install(policy_doc(2, [destination_doc("city", "mqtts://127.0.0.1:2", "t/city", pin="0" * 64)],
                                 time.time()))
    decision, kept = stack.gate.check_for_send(delivery, time.time(), old_transport)
    assert not decision.allowed and decision.rule_id == "transport" and kept
    assert stack.outbox.depth("city") == 1


def test_refused_current_copy_is_still_purged(stack):
    """The conditional purge must not keep what the policy really refuses."""
    policy, delivery = queue_one(stack)
    stack.rig.install(policy_doc(2, [destination_doc("other", BROKER, "t/other", pin=PIN)], time.time()))
    # The re-check purged it already; a current copy refused by the gate is purged too.
    assert stack.outbox.depth("city") == 0
    decision, kept = stack.gate.check_for_send(delivery, time.time())
    assert not decision.allowed and not kept


def test_refusal_before_the_recheck_ran_leaves_the_row_to_it(stack):
    """Regression (same loss, narrower window): the policy store makes a new policy active
    before it tells the outbox, so the gate could refuse a row (made under the old policy)
    and purge it before the re-check re-minimised it. Rows not yet re-checked are left to it."""
    policy, delivery = queue_one(stack)
    real_recheck = stack.outbox.recheck
    stack.outbox.recheck = lambda policy, now: None          # the re-check has not run yet
    stack.rig.install(policy_doc(2, [destination_doc("city", BROKER, "t/city", pin=PIN,
                                                     fields=["timestamp"])], time.time()))
    decision, kept = stack.gate.check_for_send(delivery, time.time())
    assert not decision.allowed and decision.rule_id == "fields" and kept
    now = time.time()
    real_recheck(stack.rig.store.active(now), now)           # ... and now it has
    (fresh,) = stack.outbox.next_batch("city", 0, 10)
    assert set(json.loads(fresh.payload)) == {"timestamp"}


def test_only_the_gate_makes_sendable_messages_and_links_send_nothing_else(stack):
    """One egress by construction: a link publishes only a Sendable, which only the gate makes."""
    import pytest

    from agent.delivery.gate import Sendable
    from agent.delivery.mqtt_link import MqttLink
    policy, delivery = queue_one(stack)
    transport = policy.destination("city").transport
    message, decision, queued = stack.gate.release(delivery, time.time(), transport)
    assert decision.allowed and queued and isinstance(message, Sendable)
    assert message.view.topic == "t/city" and message.view.qos == 1 and not message.view.retain
    assert json.loads(message.message)["read_id"] == delivery.read_id
    with pytest.raises(TypeError):
        Sendable(object(), delivery, b"{}", message.view)
    with pytest.raises(AttributeError):
        message.message = b"forged"
    link = MqttLink("city", transport)
    for forged in (b"{}", delivery, (delivery, message.view)):
        with pytest.raises(TypeError):
            link.publish(forged)
