"""The agent process: refuses bad configs, stops on SIGTERM within 5 s, survives a bad SIGHUP reload.

These run `python -m agent run` as a real process on a real video with the real models.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.agent_process import ROOT, AgentProcess, write_config
pytestmark = pytest.mark.integration


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
    assert result.returncode == 78  # EX_CONFIG: systemd does not restart it
    assert "refusing to start" in result.stderr and "outbox.max_mb: -5" in result.stderr


def test_sigterm_stops_every_stage_within_its_deadline(tmp_path, agent_factory):
    """SIGTERM while frames flow: every stage stops within its share of the shutdown deadline
    (`Pipeline.shutdown`, 4.5 s, under systemd's TimeoutStopSec=10), so the stop is clean and
    the exit code 0. The bound is the code's deadline, not a stopwatch in the test: a stage
    that overran it would log "stage did not stop in time" and make the stop unclean."""
    agent = agent_factory(write_config(tmp_path))
    agent.wait_for("pipeline started")
    time.sleep(1.0)  # let frames flow through every stage before the signal
    agent.proc.send_signal(signal.SIGTERM)
    code = agent.proc.wait(timeout=10)
    assert code == 0, "".join(agent.lines[-30:])
    agent.wait_for("pipeline stopped clean=True")
    assert not any("did not stop in time" in line for line in agent.lines)


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


def test_a_sighup_reload_the_unit_could_not_start_with_is_refused(tmp_path, agent_factory):
    """A config that passes the schema but names a file that is not there is refused at the
    reload (as `run` would refuse to start with it), not kept for the next restart to fail."""
    config = write_config(tmp_path)
    agent = agent_factory(config)
    agent.wait_for("pipeline started")
    good = config.read_text()
    missing = tmp_path / "gone.mp4"
    config.write_text(good.replace(str(tmp_path / "clip.mp4"), str(missing)))
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for("reload refused")
    agent.wait_for(f"problem=source.path: video file {missing} does not exist")
    assert agent.proc.poll() is None, "agent died on a refused reload"
    config.write_text(good)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for("reload done")
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=10) == 0
