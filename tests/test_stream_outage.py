"""A camera stream killed for 10 s and restarted mid-clip, under the whole agent pipeline.

Real parts: GStreamer's RTSP server (killed and started again on the same port), OpenCV's
FFmpeg back end, the shipped ONNX models, the tracker, the SQLite outbox. The agent must
reconnect by itself, log the outage once (lost, reconnecting, connected), keep reading (new
reads after the restart) and lose no read it had accepted before the outage.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from agent.config.loader import load_config
from agent.runtime.pipeline import build_pipeline
from stream_servers import RtspServer, require_rtsp_server, to_h264
from helpers.waiting import wait_for
from tools.synth.make_passes import make_passes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
OUTAGE_S = 10.0


def test_stream_killed_for_ten_seconds_reconnects_logs_once_and_loses_no_read(tmp_path, caplog):
    require_rtsp_server()
    caplog.set_level(logging.INFO)
    clip = tmp_path / "road.mp4"
    make_passes(clip, seed=11, count=8, width=640, height=360, gap_s=0.5, stop_share=0.0)
    server = RtspServer(to_h264(clip, tmp_path / "road_h264.mp4"), user="op", password="cam-secret").start()
    config_path = tmp_path / "unit.toml"
    config_path.write_text(f"""
[unit]
state_dir = "{tmp_path / 'state'}"
[source]
kind = "rtsp"
url = "{server.url}"
username = "op"
password = "cam-secret"
fps = 10
stall_timeout_s = 2
reconnect_initial_s = 0.5
reconnect_max_s = 2
[recognizer]
models_dir = "{ROOT / 'models'}"
[tracker]
merge_window_s = 1.5
""")
    pipeline = build_pipeline(load_config(config_path))
    pipeline.start()
    try:
        wait_for(lambda: pipeline.accept.accepted >= 1, 60, "a first accepted read")
        before = pipeline.outbox.read_ids()
        server.stop()  # the camera drops off the network mid-clip
        wait_for(lambda: pipeline.capture.source_status().get("state") == "reconnecting", 30, "the loss noticed")
        time.sleep(OUTAGE_S)
        server.start()
        wait_for(lambda: pipeline.capture.source_status().get("reconnects") == 1, 60, "the reconnect")
        accepted_at_reconnect = pipeline.accept.accepted
        wait_for(lambda: pipeline.accept.accepted > accepted_at_reconnect, 60, "a read after the reconnect")
        after = pipeline.outbox.read_ids()
        restarts = {s.name: s.restarts for s in pipeline.stages}
        heartbeat_source = pipeline.stats()["source"]  # what the status heartbeat carries
    finally:
        pipeline.shutdown()
        server.stop()
    assert before and before <= after, "a read accepted before the outage is gone"
    assert len(after) > len(before)
    assert restarts["capture"] == 0, restarts
    assert (heartbeat_source["state"], heartbeat_source["losses"], heartbeat_source["reconnects"]) == \
        ("connected", 1, 1)
    assert heartbeat_source["reason"] is None or "cam-secret" not in heartbeat_source["reason"]
    states = [r.getMessage().split(" source=")[0] for r in caplog.records if r.name == "agent.capture.health"]
    assert states[:4] == ["source connected", "source lost", "source reconnecting", "source connected"], states
    assert states.count("source lost") == 1, states
    assert "cam-secret" not in caplog.text
