"""A unit on a bench: the real agent (in-process, scripted recognizer), a real broker, the real
console process on one end of a pty cable, and pyserial on the other.

The agent is `agent.runtime.agent.Agent` run in a thread, so reload and restart requests take
the same path as in production; its recognizer reads the plate number painted into each
frame (tests/test_pipeline.py), because these tests are about the console, not vision.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from agent.config.loader import load_config
from agent.console.client import Client, Link
from agent.console.port import open_port
from helpers.soak import destination_doc, policy_doc
from agent.policy.bundle import sign_bundle
from agent.runtime.agent import Agent
from serial_line import Cable
from helpers.pipeline import PLATES, ScriptedRecognizer

ROOT = Path(__file__).resolve().parents[1]
TEST_PUB = ROOT / "firmware_config" / "policies" / "test-keys" / "department-TEST-ONLY.pub"
PASSWORD = "correct horse battery"
TOPIC = "county/reads"


def write_scene_frames(folder: Path, scenes: list[np.ndarray] | None = None, copies: int = 2) -> None:
    """Frames whose pixel (0, 0) names a plate for ScriptedRecognizer; `scenes` give them real content."""
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    for number in range(len(PLATES)):
        for _ in range(copies):
            if scenes:
                image = scenes[index % len(scenes)].copy()
            else:
                image = np.full((360, 640, 3), 90, np.uint8)
                cv2.putText(image, f"frame {index}", (40, 180), cv2.FONT_HERSHEY_SIMPLEX, 2, (250, 250, 250), 3)
            image[0, 0] = number
            cv2.imwrite(str(folder / f"{index:04d}.png"), image)
            index += 1


def signed_policy(dept, version: int, broker, now: float | None = None) -> bytes:
    """A policy with one destination, `county`, on `broker` (TLS, its key pinned)."""
    doc = policy_doc(version, [destination_doc("county", broker.url, TOPIC, pin=broker.pin)], now or time.time())
    return sign_bundle(doc, dept)


@contextlib.contextmanager
def running_bench(tmp: Path, broker, dept, **config) -> Iterator["Bench"]:
    """A bench with the agent and the console running; everything stopped afterwards."""
    bench = Bench(tmp, broker, dept)
    bench.write_config(**config)
    try:
        bench.start_agent()
        bench.start_console()
        yield bench
    finally:
        bench.close()


@dataclass
class Bench:
    tmp: Path
    broker: object  # tests/mqtt_broker.MosquittoBroker (TLS)
    dept: object
    config_path: Path = field(init=False)
    agent: Agent | None = None
    thread: threading.Thread | None = None
    cable: Cable | None = None
    console: subprocess.Popen | None = None
    console_log: Path | None = None
    exit_code: int | None = None

    def __post_init__(self) -> None:
        self.config_path = self.tmp / "unit.toml"

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    def write_config(self, scenes: list[np.ndarray] | None = None, extra: str = "",
                     idle_timeout_s: float = 600) -> Path:
        write_scene_frames(self.tmp / "frames", scenes)
        bundle = self.tmp / "policy-v1.bundle"
        bundle.write_bytes(signed_policy(self.dept, 1, self.broker))
        self.config_path.write_text(f"""
[unit]
state_dir = "{self.state_dir}"
[source]
kind = "image_folder"
path = "{self.tmp / 'frames'}"
fps = 20
loop = true
[tracker]
merge_window_s = 0.1
stopped_timeout_s = 0.1  # the scripted plates stand still and come round again: end each pass
[policy]
bundle = "{bundle}"
trusted_keys = ["{TEST_PUB}"]
[mqtt.status]
url = "{self.broker.url}"
server_key_sha256 = "{self.broker.pin}"
[console]
idle_timeout_s = {idle_timeout_s}
{extra}""")
        return self.config_path

    # --- the agent ---------------------------------------------------------------------------

    def start_agent(self) -> Agent:
        self.agent = Agent(self.config_path, load_config(self.config_path), recognizer=ScriptedRecognizer())
        self.exit_code = None
        self.thread = threading.Thread(target=lambda: setattr(self, "exit_code", self.agent.run()),
                                       name="bench-agent", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pipeline = self.agent.pipeline
            if pipeline is not None and pipeline.control is not None and pipeline.capture.latest is not None:
                return self.agent
            time.sleep(0.05)
        raise AssertionError("agent did not start with its control socket")

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.request_stop()
            self.thread.join(10)

    # --- the console ----------------------------------------------------------------------------

    def start_console(self, baud: int | None = None) -> None:
        if self.cable is None:
            self.cable = Cable(baud=baud)
        self.console_log = self.tmp / f"console-{time.monotonic_ns()}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.console_log, "wb") as log:
            self.console = subprocess.Popen(
                [sys.executable, "-m", "agent", "--log-level", "DEBUG", "console", "--port", self.cable.console_port,
                 "--config", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "console listening" in self.console_log.read_text(errors="replace"):
                return
            if self.console.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"console did not start:\n{self.console_log.read_text(errors='replace')}")

    def stop_console(self) -> None:
        if self.console is not None and self.console.poll() is None:
            self.console.terminate()
            try:
                self.console.wait(5)
            except subprocess.TimeoutExpired:
                self.console.kill()
                self.console.wait()

    def client(self, technician: str = "tech-7", login: bool = True, timeout_s: float = 20.0) -> Client:
        port = open_port(self.cable.client_port, 115200, timeout=0.2)
        link = Link(port, timeout_s=timeout_s)
        link.sync()
        client = Client(link, technician)
        if login:
            os.environ["PLATEGATE_SERIAL_PASSWORD"] = PASSWORD
            try:
                client.ensure_login(None)
            finally:
                os.environ.pop("PLATEGATE_SERIAL_PASSWORD", None)
        return client

    def close(self) -> None:
        self.stop_console()
        self.stop_agent()
        if self.cable is not None:
            self.cable.close()

    # --- what the agent recorded ---------------------------------------------------------------------

    def audit_records(self, event: str | None = None) -> list[dict]:
        if self.agent is not None and self.agent.pipeline is not None:
            try:
                self.agent.pipeline.audit.flush()
            except Exception:
                pass
        path = self.state_dir / "audit.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in records if event is None or r["event"] == event]

    def wait_audit(self, event: str, predicate=lambda r: True, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.audit_records(event):
                if predicate(record):
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no audit record {event} matching; have "
                             f"{[r['event'] for r in self.audit_records()][-20:]}")
