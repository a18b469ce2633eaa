"""Live sources against real servers: GStreamer's RTSP server and an HTTP MJPEG server.

Credentials never reach a log line; truncated frames are skipped and counted; a slow reader
gets the newest frame and the skipped ones are counted; a stream that dies is reconnected by
the source itself, with its state logged once per change.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from agent.capture.frames import NoFrame
from agent.capture.streams import LiveSource, StreamSettings
from stream_servers import MjpegServer, RtspServer, require_rtsp_server, solid_clip, to_h264
from helpers.waiting import wait_for

pytestmark = pytest.mark.integration

PASSWORD = "p@ss:w/rd#1"


def read_frames(source: LiveSource, count: int, timeout: float = 20.0) -> list:
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        assert time.monotonic() < deadline, f"only {len(frames)} frames; status {source.status()}"
        try:
            frames.append(source.read())
        except NoFrame:
            pass
    return frames


def state_lines(caplog) -> list[str]:
    return [r.getMessage().split(" source=")[0] for r in caplog.records if r.name == "agent.capture.health"]


def quick_reconnecting_source(server: MjpegServer) -> LiveSource:
    """A source that notices a loss within a second and retries every 0.1-0.3 s."""
    return LiveSource(StreamSettings(kind="http_mjpeg", url=server.url, username="cam", password="pw",
                                     stall_timeout_s=1.0, reconnect_initial_s=0.1, reconnect_max_s=0.3))


@pytest.fixture
def rtsp_clip(tmp_path: Path) -> Path:
    require_rtsp_server()
    return to_h264(solid_clip(tmp_path / "solid.mp4", frames=100), tmp_path / "solid_h264.mp4")


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_stream_is_read_with_credentials_that_never_reach_the_log(rtsp_clip, caplog, transport):
    caplog.set_level(logging.DEBUG)
    server = RtspServer(rtsp_clip, user="alice", password=PASSWORD).start()
    source = LiveSource(StreamSettings(kind="rtsp", url=server.url, username="alice", password=PASSWORD,
                                       rtsp_transport=transport))
    try:
        frames = read_frames(source, 10)
        assert frames[0].image.shape == (240, 320, 3)
        assert all(b.index > a.index for a, b in zip(frames, frames[1:]))
        assert all(b.monotonic > a.monotonic for a, b in zip(frames, frames[1:]))
        assert abs(frames[-1].captured_at - time.time()) < 5  # wall-clock UTC capture time
        assert source.status()["state"] == "connected"
    finally:
        source.close()
        server.stop()
    assert PASSWORD not in caplog.text and "alice" not in caplog.text
    assert PASSWORD not in repr(source.status()) and source.name == server.url


def test_refused_credentials_log_the_loss_once_not_once_per_attempt(rtsp_clip, caplog):
    caplog.set_level(logging.INFO)
    server = RtspServer(rtsp_clip, user="alice", password=PASSWORD).start()
    source = LiveSource(StreamSettings(kind="rtsp", url=server.url, username="alice", password="wrong",
                                       reconnect_initial_s=0.05, reconnect_max_s=0.1))
    try:
        wait_for(lambda: source.attempts >= 5, what="five attempts")
    finally:
        source.close()
        server.stop()
    assert state_lines(caplog) == ["source lost", "source reconnecting", "source closed"]
    assert "wrong" not in caplog.text


def test_mjpeg_stream_skips_and_counts_truncated_frames(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    server = MjpegServer(solid_clip(tmp_path / "solid.mp4"), user="cam", password=PASSWORD,
                         corrupt_every=4).start()
    source = LiveSource(StreamSettings(kind="http_mjpeg", url=server.url, username="cam", password=PASSWORD))
    try:
        read_frames(source, 20)
        wait_for(lambda: source.corrupt_frames >= 3, what="truncated frames counted")
        assert source.health.losses == 0 and source.status()["state"] == "connected"
    finally:
        source.close()
        server.stop()
    assert PASSWORD not in caplog.text


def test_a_slow_reader_gets_the_newest_frame_and_the_skipped_ones_are_counted(tmp_path):
    server = MjpegServer(solid_clip(tmp_path / "solid.mp4"), fps=25).start()
    source = LiveSource(StreamSettings(kind="http_mjpeg", url=server.url, username="cam", password="pw"))
    try:
        first = read_frames(source, 1)[0]
        wait_for(lambda: source.frames_grabbed >= first.index + 8, what="eight newer frames")
        newest = source.frames_grabbed - 1
        second = read_frames(source, 1)[0]
        assert second.index >= newest  # not the next buffered one: the newest
        assert source.stale_dropped >= 6
    finally:
        source.close()
        server.stop()


def test_a_dead_mjpeg_server_is_reconnected_when_it_comes_back(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    server = MjpegServer(solid_clip(tmp_path / "solid.mp4")).start()
    source = quick_reconnecting_source(server)
    try:
        read_frames(source, 3)
        server.stop()
        wait_for(lambda: source.health.state == "reconnecting", what="reconnecting")
        wait_for(lambda: source.attempts >= 4, what="several failed attempts")
        server = MjpegServer(solid_clip(tmp_path / "solid2.mp4"), port=server.port).start()
        wait_for(lambda: source.health.reconnects == 1, what="reconnected")
        read_frames(source, 3)
    finally:
        source.close()
        server.stop()
    assert state_lines(caplog) == ["source connected", "source lost", "source reconnecting", "source connected",
                                   "source closed"]


def test_capture_test_command_against_the_rtsp_stream_writes_an_annotated_jpeg(tmp_path):
    require_rtsp_server()
    import json
    import subprocess
    import sys

    import cv2
    import numpy as np

    from tools.synth.make_passes import make_passes

    clip = tmp_path / "road.mp4"
    make_passes(clip, seed=11, count=4, width=640, height=360, gap_s=0.3, stop_share=0.0)
    server = RtspServer(to_h264(clip, tmp_path / "road_h264.mp4"), user="op", password=PASSWORD).start()
    root = Path(__file__).resolve().parents[1]
    config = tmp_path / "unit.toml"
    config.write_text(f"""
[source]
kind = "rtsp"
url = "{server.url}"
username = "op"
password = "{PASSWORD}"
[recognizer]
models_dir = "{root / 'models'}"
[scene]
roi = [[0.0, 0.35], [1.0, 0.35], [1.0, 1.0], [0.0, 1.0]]
privacy_masks = [[[0.0, 0.0], [0.4, 0.0], [0.4, 0.2], [0.0, 0.2]]]
""")
    snapshot = tmp_path / "aim.jpg"
    try:
        result = subprocess.run([sys.executable, "-m", "agent", "capture", "test", "--config", str(config),
                                 "--seconds", "4", "--snapshot", str(snapshot), "--json"],
                                capture_output=True, text=True, cwd=root, timeout=120)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["kind"], report["width"], report["height"]) == ("rtsp", 640, 360)
    assert report["fps"] > 5 and report["frames"] > 20 and report["focus"] > 0
    assert report["source"] == server.url and PASSWORD not in result.stdout + result.stderr
    image = cv2.imdecode(np.frombuffer(snapshot.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (360, 640, 3)
    green = (image[:, :, 1] > 180) & (image[:, :, 0] < 60) & (image[:, :, 2] < 60)
    red = (image[:, :, 2] > 180) & (image[:, :, 0] < 60) & (image[:, :, 1] < 60)
    assert green.sum() > 300 and red.sum() > 200  # the ROI and the mask outline are drawn
    assert image[30:65, 20:230].max() < 40  # inside the mask: black (below its label, inside its outline)


def test_a_stalled_stream_counts_as_lost_after_the_stall_timeout(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    server = MjpegServer(solid_clip(tmp_path / "solid.mp4")).start()
    source = quick_reconnecting_source(server)
    try:
        read_frames(source, 3)
        server.paused.set()  # the connection stays open; frames stop coming
        wait_for(lambda: source.health.losses == 1, what="the stall noticed")
        assert source.health.snapshot()["reason"].startswith(("stalled", "no frame"))
        server.paused.clear()
        wait_for(lambda: source.health.reconnects == 1, what="reconnected")
        read_frames(source, 3)
    finally:
        source.close()
        server.stop()
