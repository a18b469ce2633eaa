"""sd_notify on a real unix datagram socket: READY after start-up, WATCHDOG=1 while every stage
makes progress, none while a stage hangs, and the pings come back when it recovers.

The agent runs in-process (main loop in a thread) with the real ONNX models on a real video;
the recognizer is wrapped so the test can make it hang on demand (a hang, not a crash).
"""
from __future__ import annotations

import re
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from agent.config.loader import load_config
from agent.runtime.agent import Agent
from agent.runtime.watchdog import Stall, stalls, status_line
from agent.vision.recognizer import Recognizer
from helpers.agent_process import ROOT, write_config

pytestmark = pytest.mark.integration


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; every datagram is kept, in order."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="pg-notify-")  # short: sun_path holds 108 bytes
        self.path = str(Path(self.dir) / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self.lines.extend(data.decode().splitlines())

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 30.0) -> int:
        """Index of the first line at or after `after` matching `pattern` (regex)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(self.snapshot()[after:], start=after):
                if re.search(pattern, line):
                    return i
            time.sleep(0.02)
        raise AssertionError(f"no notify message matching {pattern!r}; got {self.snapshot()[-20:]}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()


class HangingRecognizer:
    """The real recognizer; once `hang` is set, the next frame blocks until `release` is set."""

    def __init__(self) -> None:
        self.real = Recognizer.from_models(ROOT / "models")
        self.hang = threading.Event()
        self.release = threading.Event()

    def recognize(self, image):
        if self.hang.is_set() and not self.release.is_set():
            self.release.wait()
        return self.real.recognize(image)


def test_ready_then_pings_only_while_every_stage_makes_progress(tmp_path, monkeypatch):
    listener = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # ping every 0.2 s
    config_path = write_config(tmp_path)
    recognizer = HangingRecognizer()
    agent = Agent(config_path, load_config(config_path), recognizer=recognizer,
                  health={"stall_after_s": 1.0, "status_every_s": 0.3})
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(agent.run()))
    runner.start()
    try:
        ready = listener.wait_for(r"^READY=1$")
        assert listener.wait_for(r"^STATUS=running: frames \d+", after=ready) > ready
        first_ping = listener.wait_for(r"^WATCHDOG=1$", after=ready)
        listener.wait_for(r"^WATCHDOG=1$", after=first_ping + 1)  # pings keep coming while healthy

        recognizer.hang.set()
        stalled = listener.wait_for(r"^STATUS=STALLED \(recognize silent \d+ s\)")
        # Wait until the stage has been silent for 3 s (2 s and ~10 watchdog periods past the stall).
        later = listener.wait_for(r"^STATUS=STALLED \(recognize silent ([3-9]|\d\d+) s\)", after=stalled)
        during = listener.snapshot()[stalled:later + 1]
        assert "WATCHDOG=1" not in during, during
        assert all("capture" not in line for line in during), "only the hung stage is named"

        recognizer.release.set()
        recovered = listener.wait_for(r"^STATUS=running:", after=later)
        listener.wait_for(r"^WATCHDOG=1$", after=recovered)
    finally:
        recognizer.release.set()
        agent.request_stop()
        runner.join(15)
        listener.close()
    assert codes == [0]
    assert "STOPPING=1" in listener.snapshot()


class FakeStage:
    def __init__(self, name: str, progress_at: float, running: bool = True) -> None:
        self.name, self.progress_at, self._running = name, progress_at, running

    def running(self) -> bool:
        return self._running


def test_only_running_stages_past_the_limit_are_stalled():
    stages = [FakeStage("capture", 99.0), FakeStage("recognize", 70.0),
              FakeStage("track", 10.0, running=False)]  # finished: the source ended, not hung
    assert stalls(stages, now=100.0, stall_after_s=20.0) == [Stall("recognize", 30.0)]


def test_status_line_is_one_line_with_the_figures():
    stats = {"frames_read": 120, "frames_dropped": 3, "reads_accepted": 5,
             "queue_depth": {"a": 2, "b": 1}, "policy_version": 7, "stage_restarts": {"capture": 1}}
    assert status_line(stats, []) == ("running: frames 120 (dropped 3), reads 5, queued 3, "
                                      "policy v7, restarts 1")
    line = status_line({}, [Stall("recognize", 25.4)])
    assert line.startswith("STALLED (recognize silent 25 s): ") and "policy none" in line
    assert "\n" not in line


def test_a_hung_delivery_sender_is_a_stall_too(tmp_path, mosquitto, monkeypatch):
    """The senders beat like the stages: one blocked inside a step is reported, then recovers."""
    from agent.delivery import service as delivery_service
    from helpers.soak import build_stack, destination_doc, policy_doc

    hang, release, inside = threading.Event(), threading.Event(), threading.Event()
    real_step = delivery_service._Sender._step

    def step(self):
        if hang.is_set() and not release.is_set():
            inside.set()
            release.wait()
        return real_step(self)

    monkeypatch.setattr(delivery_service._Sender, "_step", step)
    stack = build_stack(tmp_path / "state")
    stack.rig.install(policy_doc(1, [destination_doc("county", mosquitto.url, "pg/county/reads", pin=mosquitto.pin)], time.time()))
    stack.service.start()
    try:
        (sender,) = stack.service.senders()
        assert sender.name == "sender-county" and sender.running()
        hang.set()
        assert inside.wait(10)
        deadline = time.monotonic() + 10
        while not stalls(stack.service.senders(), time.monotonic(), 0.5) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [s.stage for s in stalls(stack.service.senders(), time.monotonic(), 0.5)] == ["sender-county"]
        release.set()
        deadline = time.monotonic() + 10
        while stalls(stack.service.senders(), time.monotonic(), 0.5) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stalls(stack.service.senders(), time.monotonic(), 0.5) == []
    finally:
        release.set()
        stack.close()
