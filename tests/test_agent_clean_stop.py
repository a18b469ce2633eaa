"""A clean stop of the real agent: retained `offline`, the reason in the last heartbeat, what
is still pending said in one line, exit 0, and no ERROR on a config that names no HMAC keys.

Regressions (issue 14, item 9): a clean stop published the status `stopped` (Home Assistant
and Frigate availability knows `online`/`offline` only); the shipped config named an HMAC key
file most units do not have, so every start logged "hmac keys not loaded" at ERROR.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_agent_lifecycle import AgentProcess, write_config
from test_disk_full_agent import heartbeats, status_section, terminate, wait_beat

pytestmark = pytest.mark.integration


def test_clean_stop_is_offline_with_reason_and_pending_line(tmp_path: Path, mosquitto, collector_factory):
    config = write_config(tmp_path, extra=f"[mqtt.status]\n{status_section(mosquitto)}\n")
    config.write_text(config.read_text().replace("[unit]\n", '[unit]\nid = "unit-cs"\n', 1))
    collector = collector_factory(mosquitto, topic="plategate/unit-cs/#")
    agent = AgentProcess(config)
    try:
        wait_beat(collector, lambda b: b["state"] == "running" and b["frames_read"] > 0)
    finally:
        code, log = terminate(agent)
    assert code == 0, log[-3000:]
    stopped = agent.wait_for("pipeline stopped clean=True")
    assert "level=INFO" in stopped and "pending: queued_for_delivery=0 (kept on disk) unstored_reads=0" in stopped
    assert "level=ERROR" not in log and "Traceback" not in log, log
    statuses = [m for m in collector.snapshot() if m.topic == "plategate/unit-cs/status"]
    assert [m.payload for m in statuses] == [b"online", b"offline"]
    last = heartbeats(collector)[-1]
    assert last["state"] == "stopped" and json.dumps(last["queue_depth"]) == "{}"
