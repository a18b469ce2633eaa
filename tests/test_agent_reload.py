"""SIGHUP reload with reads queued for a broker that is down: nothing queued is lost.

The agent runs in-process (its main loop in a thread) with the scripted recognizer of
test_pipeline, a real outbox, a real policy store and a real mosquitto that starts late.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import jsonschema
import pytest

import agent

from agent.config.loader import load_config
from helpers.soak import destination_doc, policy_doc
from agent.policy.bundle import sign_bundle
from agent.policy.signing import load_private_key
from agent.runtime.agent import Agent
from mqtt_broker import MosquittoBroker
from helpers.pipeline import PLATES, ScriptedRecognizer, make_config

ROOT = Path(__file__).resolve().parents[1]
KEYS = ROOT / "firmware_config" / "policies" / "test-keys"
pytestmark = pytest.mark.integration
READ_SCHEMA = json.loads((Path(agent.__file__).parent / "schemas" / "read-message.json").read_text())


def wait_until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sighup_reload_installs_new_policy_without_losing_queued_reads(tmp_path, collector_factory):
    # The destination is down while the reads queue. Its subscriber has a persistent session
    # made before (so the broker keeps the reads for it however soon the unit reconnects:
    # with full-jitter backoff that can be before the subscriber is back).
    broker = MosquittoBroker(tmp_path / "broker", persistence=True).start()
    collector = collector_factory(broker, persistent=True)
    broker.stop()
    key = load_private_key(KEYS / "department-TEST-ONLY.key")
    bundle = tmp_path / "policy.bundle"
    dest = destination_doc("county", broker.url, "pg/county/reads", pin=broker.pin)
    bundle.write_bytes(sign_bundle(policy_doc(1, [dest], time.time()), key))
    config_path = make_config(tmp_path, f"""[policy]
bundle = "{bundle}"
trusted_keys = ["{KEYS / 'department-TEST-ONLY.pub'}"]
""")
    agent = Agent(config_path, load_config(config_path), recognizer=ScriptedRecognizer())
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(agent.run()))
    runner.start()
    try:
        assert wait_until(lambda: agent.pipeline is not None and agent.pipeline.outbox.depth("county") == len(PLATES))

        bundle.write_bytes(sign_bundle(policy_doc(2, [dest], time.time()), key))
        agent.request_reload()
        assert wait_until(lambda: agent.pipeline.policies.active(time.time()).version == 2)
        assert agent.pipeline.outbox.depth("county") == len(PLATES)

        broker.start()
        assert wait_until(lambda: len({json.loads(m.payload)["read_id"] for m in collector.snapshot()})
                          == len(PLATES), timeout=60)
        for message in collector.snapshot():
            jsonschema.validate(json.loads(message.payload), READ_SCHEMA)
        plates = sorted({json.loads(m.payload)["read"]["plate"] for m in collector.snapshot()})
        assert plates == sorted(PLATES)
        assert {json.loads(m.payload)["policy_version"] for m in collector.snapshot()} <= {1, 2}
    finally:
        agent.request_stop()
        runner.join(15)
        broker.stop()
    assert codes == [0]
