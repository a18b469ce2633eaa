"""A real `python -m agent run` process with its log captured, and a config for it."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


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
