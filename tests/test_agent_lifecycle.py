"""The agent process: refuses bad configs, stops on SIGTERM within 5 s, survives a bad SIGHUP reload.

These run `python -m agent run` as a real process on a real video with the real models.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


class AgentProcess:
    def __init__(self, config: Path):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"never logged {text!r}; log:\n{''.join(self.lines[-40:])}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def write_clip(path: Path) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(20):
        writer.write(np.full((240, 320, 3), 40 + i, np.uint8))
    writer.release()


def write_config(tmp_path: Path, level: str = "INFO", extra: str = "") -> Path:
    clip = tmp_path / "clip.mp4"
    if not clip.exists():
        write_clip(clip)
    config = tmp_path / "unit.toml"
    config.write_text(f"""
[unit]
state_dir = "{tmp_path / 'state'}"
[logging]
level = "{level}"
[source]
kind = "video_file"
path = "{clip}"
fps = 10
loop = true
[recognizer]
models_dir = "{ROOT / 'models'}"
{extra}
""")
    return config


@pytest.fixture
def agent_factory():
    started: list[AgentProcess] = []

    def start(config: Path) -> AgentProcess:
        agent = AgentProcess(config)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def test_refuses_to_start_on_an_invalid_config(tmp_path):
    config = write_config(tmp_path, extra="[outbox]\nmax_mb = -5\n")
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "refusing to start" in result.stderr and "outbox.max_mb: -5" in result.stderr


def test_sigterm_stops_cleanly_within_five_seconds(tmp_path, agent_factory):
    agent = agent_factory(write_config(tmp_path))
    agent.wait_for("pipeline started")
    time.sleep(1.0)
    sent = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    code = agent.proc.wait(timeout=10)
    elapsed = time.monotonic() - sent
    assert code == 0, "".join(agent.lines[-30:])
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    agent.wait_for("pipeline stopped clean=True")


def test_invalid_sighup_reload_keeps_the_running_config(tmp_path, agent_factory):
    config = write_config(tmp_path)
    agent = agent_factory(config)
    agent.wait_for("pipeline started")
    good = config.read_text()
    config.write_text(good + "\n[tracker]\nmerge_window_s = -1\nbogus = 1\n")
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for("reload refused")
    agent.wait_for("problem=tracker.bogus: unknown key")
    assert agent.proc.poll() is None, "agent died on an invalid reload"
    # ... and it still serves: the next (valid) reload is done by the same process.
    config.write_text(good.replace('level = "INFO"', 'level = "DEBUG"'))
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for("reload done sections=logging")
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=10) == 0
