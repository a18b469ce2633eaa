"""Retained status, last will and heartbeat, against a real mosquitto."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.delivery.status import BrokerSettings, StatusPublisher
from helpers.mqtt import until_sentinel

pytestmark = pytest.mark.integration


def statuses(sub, topic: str) -> list[bytes]:
    return [m.payload for m in sub.snapshot() if m.topic == topic]


def test_online_heartbeat_and_offline_on_a_clean_stop(mosquitto, collector_factory, tmp_path: Path):
    """Regression (issue 14, item 9): a clean stop published the retained status `stopped`,
    which Home Assistant and Frigate availability does not know; it is now `offline`, and the
    reason (`stopped`) is the state of a last heartbeat."""
    sub = collector_factory(mosquitto)
    stats = {"fps": 14.5, "dropped_frames": 3, "queue_depth": {"city": 2},
             "oldest_queued_age_s": 1.5, "policy_version": 4, "model_versions": {"ocr": "1.2"}}
    pub = StatusPublisher(BrokerSettings(mosquitto.url, server_key_sha256=mosquitto.pin),
                          "unit-7", "plategate/units",
                          lambda: stats, threading.Event(), interval_s=0.2, disk_path=tmp_path)
    pub.start()
    status_topic = "plategate/units/unit-7/status"
    assert sub.wait_for(lambda msgs: any(m.topic.endswith("/heartbeat") for m in msgs), 15)
    assert statuses(sub, status_topic)[0] == b"online"
    beat = next(json.loads(m.payload) for m in sub.snapshot() if m.topic.endswith("/heartbeat"))
    assert beat["queue_depth"] == {"city": 2} and beat["fps"] == 14.5
    assert beat["uptime_s"] >= 0 and beat["disk"]["total_bytes"] > 0
    assert beat["unit_id"] == "unit-7" and beat["state"] == "running"
    pub.stop()
    assert sub.wait_for(lambda msgs: b"offline" in statuses(sub, status_topic), 10)
    beats = [json.loads(m.payload) for m in sub.snapshot() if m.topic.endswith("/heartbeat")]
    assert beats[-1]["state"] == "stopped" and beats[-1]["queue_depth"] == {"city": 2}
    assert all(b["state"] == "running" for b in beats[:-1])
    assert set(statuses(sub, status_topic)) == {b"online", b"offline"}
    # Retained: a late subscriber still learns the unit is offline.
    late = collector_factory(mosquitto, topic=status_topic)
    assert late.wait_count(1, 10) and late.snapshot()[0].payload == b"offline"
    assert late.snapshot()[0].retain


def test_last_will_offline_when_the_unit_dies(mosquitto, collector_factory):
    sub = collector_factory(mosquitto)
    code = (
        "import threading, time\n"
        "from agent.delivery.status import BrokerSettings, StatusPublisher\n"
        f"p = StatusPublisher(BrokerSettings({mosquitto.url!r}, server_key_sha256={mosquitto.pin!r}), "
        "'unit-9', 'pg', dict, "
        "threading.Event(), interval_s=5)\n"
        "p.start()\n"
        "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        topic = "pg/unit-9/status"
        assert sub.wait_for(lambda msgs: b"online" in statuses(sub, topic), 15)
        proc.kill()
        proc.wait(10)
        assert sub.wait_for(lambda msgs: statuses(sub, topic)[-1:] == [b"offline"], 15)
    finally:
        proc.kill()


def _wrong_key_publisher(tls_broker_factory, collector_factory, tmp_path: Path, unit: str):
    """A TLS broker with a `#` subscriber, and a status publisher pinned to another key."""
    from mqtt_broker import make_tls_files
    broker = tls_broker_factory()
    sub = collector_factory(broker)
    other = make_tls_files(tmp_path / "other")
    pub = StatusPublisher(BrokerSettings(broker.url, server_key_sha256=other.server_key_sha256,
                                         ca_pem=broker.tls.ca_pem),
                          unit, "pg", dict, threading.Event(), interval_s=0.2)
    return sub, pub


def _logged(caplog, text: str, timeout: float = 15.0) -> bool:
    """Wait for a log record containing `text` (the positive signal of a refusal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in r.getMessage() for r in caplog.records):
            return True
        time.sleep(0.05)
    return False


def test_status_broker_with_wrong_key_gets_nothing(tls_broker_factory, collector_factory,
                                                   tmp_path: Path, caplog):
    sub, pub = _wrong_key_publisher(tls_broker_factory, collector_factory, tmp_path, "unit-3")
    pub.start()
    try:
        assert _logged(caplog, "ALERT status broker identity")
        assert pub.identity_failures >= 1          # refused at the handshake, before CONNECT
        assert until_sentinel(sub) == []
        assert pub.heartbeats == 0
    finally:
        pub.stop(timeout=1.0)


def test_status_link_checks_the_pin_again_after_connack(tls_broker_factory, collector_factory,
                                                        tmp_path: Path, caplog):
    """The status link runs the same identity checks as a read link: should the check before
    CONNECT not run (a paho release that stops calling the socket hook), the one on the live
    socket after CONNACK still refuses the broker before "online" or any heartbeat."""
    sub, pub = _wrong_key_publisher(tls_broker_factory, collector_factory, tmp_path, "unit-4")
    pub.client.on_socket = None                  # the hook before CONNECT is gone
    pub.start()
    try:
        assert _logged(caplog, "identity check failed after CONNACK")
        assert pub.identity_failures >= 1
        assert until_sentinel(sub) == []           # no "online", no heartbeat
        assert pub.heartbeats == 0
    finally:
        pub.stop(timeout=1.0)


def test_reconnect_noise_does_not_reach_the_log_at_error(broker_factory, tmp_path: Path, caplog):
    """Regression (issue 14, item 9): while the status broker was down, paho logged "Client is
    not connected" at ERROR on every pass of its loop between reconnect attempts."""
    import logging

    caplog.set_level(logging.INFO)
    broker = broker_factory()
    pub = StatusPublisher(BrokerSettings(broker.url, server_key_sha256=broker.pin), "unit-5", "pg", dict, threading.Event(),
                          interval_s=0.2)
    pub.start()
    try:
        assert pub._connected.wait(15)
        broker.stop()
        failed = lambda: sum("status broker connect failed" in r.getMessage() for r in caplog.records)
        deadline = time.monotonic() + 30
        while failed() < 2 and time.monotonic() < deadline:   # paho retries after 1 s, then 2 s
            time.sleep(0.1)
        assert failed() >= 2
    finally:
        pub.stop(timeout=1.0)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_reconnect_noise_stays_visible_at_debug(caplog):
    """With paho's logger at DEBUG (agent --log-level DEBUG) the line is kept, as DEBUG."""
    import logging

    from agent.delivery.paho_log import paho_logger

    logger = paho_logger()
    caplog.set_level(logging.DEBUG, logger=logger.name)
    logger.error("Client is not connected. Socket: None). Last known Connection State: X")
    logger.error("failed to receive on socket: reset")
    assert [(r.levelname, r.getMessage()[:23]) for r in caplog.records] == [
        ("DEBUG", "Client is not connected"), ("ERROR", "failed to receive on so")]
