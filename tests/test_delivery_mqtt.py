"""Delivery over MQTT against real mosquitto brokers: identity, ACL, outages, protocol options."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import jsonschema
import pytest

import agent
from agent.audit.records import expanded_records
from agent.supervision import Backoff
from agent.delivery.mqtt_link import DestinationCredentials, validate_topic
from helpers.soak import build_stack, destination_doc, make_read, policy_doc
from helpers.mqtt import until_sentinel
from mqtt_broker import make_tls_files

SCHEMA = json.loads((Path(agent.__file__).parent / "schemas" / "read-message.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def audit_events(stack, event: str) -> list[dict]:
    stack.audit.flush()
    return expanded_records(stack.audit.path, event)


def read_ids(messages) -> list[str]:
    out = []
    for msg in messages:
        body = json.loads(msg.payload)
        VALIDATOR.validate(body)
        out.append(body["read_id"])
    return out


def dedupe(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]


@pytest.fixture
def stack_factory(tmp_path: Path):
    stacks = []

    def make(*dest_docs: dict, name: str = "state", **kwargs):
        s = build_stack(tmp_path / name, **kwargs)
        s.rig.install(policy_doc(1, dest_docs, time.time()))
        s.service.start()
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.close()


def wait_drained(stack, dest_id: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while stack.outbox.depth(dest_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    return stack.outbox.depth(dest_id) == 0


def accept(stack, indices, **kwargs) -> list[str]:
    now = time.time()
    reads = [make_read(i, now, **kwargs) for i in indices]
    stack.outbox.accept(reads, now)
    return [r.read_id for r in reads]


# --- pure parts ---------------------------------------------------------------------------

@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "#", "$SYS/x", "a//b", "/a", "a/",
                                   "a\x00b", "x" * 65536])
def test_bad_topics_are_refused(topic):
    with pytest.raises(ValueError):
        validate_topic(topic)


def test_good_topic_passes():
    assert validate_topic("plategate/unit-7/reads") == "plategate/unit-7/reads"


def test_credentials_repr_redacts_password():
    creds = DestinationCredentials(username="unit7", password="s3cret-pw")
    assert "s3cret-pw" not in repr(creds) and "<redacted>" in repr(creds)
    with pytest.raises(ValueError):
        DestinationCredentials(protocol="4")


def test_backoff_is_jittered_and_capped():
    """Full jitter (issue 15): each delay is uniform in [0, ceiling], the ceiling doubling up
    to the cap; the old draw, uniform(ceiling/2, ceiling), kept every delay above half."""
    import random
    backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(1), floor=0.05)
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(0.05 <= d <= 8.0 for d in delays)
    assert backoff.ceiling() == 8.0 and len(set(delays)) == len(delays)
    assert any(d < 8.0 / 2 for d in delays[4:])         # below half the ceiling: full jitter
    backoff.reset()
    assert backoff.next_delay() <= 0.5


# --- against mosquitto ------------------------------------------------------------------

@pytest.mark.integration
def test_delivers_in_order_with_properties_and_schema(mosquitto, collector_factory,
                                                      stack_factory):
    sub = collector_factory(mosquitto)
    stack = stack_factory(destination_doc("city", mosquitto.url, "pg/city/reads", pin=mosquitto.pin,
                                          max_age_s=600))
    ids = accept(stack, range(50)) + accept(stack, range(50, 60), hit=True)
    assert sub.wait_count(60, timeout=30)
    msgs = sub.snapshot()
    assert read_ids(msgs) == ids
    first = msgs[0]
    assert first.topic == "pg/city/reads" and first.qos == 1 and not first.retain
    props = dict(first.user_properties)
    assert props == {"purpose": "stolen_vehicle", "policy_version": "1", "read_id": ids[0]}
    assert 590 <= first.message_expiry_interval <= 600
    assert wait_drained(stack, "city")
    assert stack.service.stats()["queue_depth"]["city"] == 0
    sent = audit_events(stack, "delivery.sent")
    assert [s["fields"]["read_id"] for s in sent] == ids


@pytest.mark.integration
def test_mqtt_311_option(mosquitto, collector_factory, stack_factory):
    sub = collector_factory(mosquitto)
    stack = stack_factory(destination_doc("city", mosquitto.url, "pg/city/reads", pin=mosquitto.pin),
                          credentials={"city": DestinationCredentials(protocol="3.1.1")})
    ids = accept(stack, range(20))
    assert sub.wait_count(20, timeout=30)
    assert read_ids(sub.snapshot()) == ids
    assert all(m.user_properties == () for m in sub.snapshot())   # no v5 properties in 3.1.1


@pytest.mark.integration
def test_tls_with_ca_pin_client_cert_and_password(tls_broker_factory, collector_factory,
                                                  stack_factory, tmp_path):
    tls = make_tls_files(tmp_path / "pki")
    broker = tls_broker_factory(tls=tls, require_client_cert=True,
                                passwords={"unit7": "pw-unit7", "reader": "pw-reader"})
    sub = collector_factory(broker, username="reader", password="pw-reader")
    creds = DestinationCredentials(username="unit7", password="pw-unit7",
                                   client_cert=str(tls.client_cert),
                                   client_key=str(tls.client_key))
    stack = stack_factory(destination_doc("state", broker.url, "pg/state/reads",
                                          pin=tls.server_key_sha256, ca_pem=tls.ca_pem),
                          credentials={"state": creds})
    ids = accept(stack, range(10))
    assert sub.wait_count(10, timeout=30)
    assert read_ids(sub.snapshot()) == ids


@pytest.mark.integration
@pytest.mark.parametrize("same_ca", [True, False], ids=["same-ca-other-key", "other-ca"])
def test_wrong_server_key_delivers_nothing(tls_broker_factory, collector_factory, stack_factory,
                                           tmp_path, caplog, same_ca):
    """An impostor broker on the destination's address gets no read and no credentials."""
    real = make_tls_files(tmp_path / "real")
    impostor_pki = make_tls_files(tmp_path / "impostor", ca=real if same_ca else None)
    impostor = tls_broker_factory(tls=impostor_pki,
                                  passwords={"unit7": "pw-unit7", "spy": "pw-spy"})
    spy = collector_factory(impostor, username="spy", password="pw-spy")
    creds = DestinationCredentials(username="unit7", password="pw-unit7")
    caplog.set_level(logging.WARNING)
    stack = stack_factory(destination_doc("state", impostor.url, "pg/state/reads",
                                          pin=real.server_key_sha256, ca_pem=real.ca_pem),
                          credentials={"state": creds})
    accept(stack, range(5))
    deadline = time.monotonic() + 20
    while not audit_events(stack, "delivery.refused") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert until_sentinel(spy) == []
    refusal = audit_events(stack, "delivery.refused")[0]["fields"]
    assert refusal["reason"] == "identity" and refusal["destination"] == "state"
    assert refusal["expected_pin"] == real.server_key_sha256
    assert any("ALERT destination identity" in r.getMessage() for r in caplog.records)
    assert stack.outbox.depth("state") == 5           # kept, not sent, not lost
    # The impostor never saw a CONNECT carrying the unit's credentials.
    assert "unit7" not in impostor.log_path.read_text()


@pytest.mark.integration
def test_acl_refusal_is_logged_and_the_read_retried(broker_factory, collector_factory,
                                                    stack_factory, caplog):
    broker = broker_factory(acl="topic read #\ntopic write other/#\n")
    sub = collector_factory(broker)
    caplog.set_level(logging.ERROR)
    stack = stack_factory(destination_doc("city", broker.url, "pg/city/reads", pin=broker.pin))
    ids = accept(stack, range(3))
    deadline = time.monotonic() + 20
    while stack.service.stats()["destinations"].get("city", {}).get("broker_refusals", 0) == 0 \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    refusals = [r.getMessage() for r in caplog.records if "refused by broker" in r.getMessage()]
    assert refusals and "reason_code=0x87" in refusals[0]
    assert stack.outbox.depth("city") == 3 and sub.snapshot() == []
    broker.update_acl("topic read #\ntopic write pg/#\n")
    assert sub.wait_count(3, timeout=30)
    assert dedupe(read_ids(sub.snapshot())) == ids
    assert wait_drained(stack, "city")


@pytest.mark.integration
def test_broker_down_then_back_loses_nothing(broker_factory, collector_factory, stack_factory):
    broker = broker_factory(persistence=True)
    sub = collector_factory(broker, persistent=True)
    stack = stack_factory(destination_doc("city", broker.url, "pg/city/reads", pin=broker.pin))
    ids = accept(stack, range(100))
    assert sub.wait_count(50, timeout=30)
    broker.stop()
    for start in range(100, 400, 25):          # keeps accepting while the broker is down
        ids += accept(stack, range(start, start + 25))
        time.sleep(0.02)
    assert stack.outbox.depth("city") > 0
    time.sleep(1.0)
    broker.start()
    assert sub.wait_for(lambda msgs: len({json.loads(m.payload)["read_id"] for m in msgs})
                        >= len(ids), timeout=60)
    assert dedupe(read_ids(sub.snapshot())) == ids
    assert wait_drained(stack, "city")


@pytest.mark.integration
def test_clean_stop_mid_stream_then_restart_loses_nothing(mosquitto, collector_factory,
                                                          tmp_path):
    sub = collector_factory(mosquitto)
    dest = destination_doc("city", mosquitto.url, "pg/city/reads", pin=mosquitto.pin)
    first = build_stack(tmp_path / "unit")
    first.rig.install(policy_doc(1, [dest], time.time()))
    first.service.start()
    ids = []
    for start in range(0, 600, 50):
        ids += accept(first, range(start, start + 50))
    first.close(timeout=5)                      # mid-stream: part of it is still queued
    second = build_stack(tmp_path / "unit", start=True)
    try:
        assert sub.wait_for(lambda msgs: len({json.loads(m.payload)["read_id"] for m in msgs})
                            >= len(ids), timeout=30)
        assert dedupe(read_ids(sub.snapshot())) == ids
        assert wait_drained(second, "city")
    finally:
        second.close()


@pytest.mark.integration
def test_in_flight_window_respects_the_brokers_receive_maximum(broker_factory, collector_factory,
                                                                 stack_factory, monkeypatch):
    """Regression: the sender kept up to its own window of QoS 1 messages in flight whatever
    Receive Maximum the broker's CONNACK gave (MQTT 5 s. 3.2.2.3.3): a protocol error that a
    strict broker answers by disconnecting, so a backlog never drained. It is now the bound."""
    from agent.delivery import service
    broker = broker_factory(max_inflight=10)
    sub = collector_factory(broker)
    most = [0]
    real = service._Sender._publish_some

    def publish_some(sender, link, policy, dest, now):
        count = real(sender, link, policy, dest, now)
        most[0] = max(most[0], len(sender.inflight))
        return count

    monkeypatch.setattr(service._Sender, "_publish_some", publish_some)
    stack = stack_factory(destination_doc("city", broker.url, "pg/city/reads", pin=broker.pin))
    ids = accept(stack, range(300))
    assert sub.wait_count(300, timeout=30)
    assert dedupe(read_ids(sub.snapshot())) == ids
    assert 0 < most[0] <= 10
