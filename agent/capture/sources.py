"""Build the frame source a config asks for, with the privacy masks applied to every frame.

    [source] kind → RetryingSource(replay) | LiveSource(camera, stream) → MaskedSource → capture stage

The masks are applied here, as each frame leaves the source, so no later stage (recognition,
tracking, crops, snapshots, anything sent) can ever see the masked pixels.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agent.capture.files import open_source as open_replay
from agent.capture.frames import Frame, FrameSource
from agent.capture.health import Backoff
from agent.capture.resilient import RetryingSource
from agent.capture.scene import PrivacyMask
from agent.capture.streams import LiveSource, StreamSettings
from agent.config.loader import Problem
from agent.config.schema import REPLAY_KINDS, DeviceConfig, SceneConfig, SourceConfig


class MaskedSource:
    """Any source with the privacy masks blacked out on each frame it hands over."""

    def __init__(self, source: Any, mask: PrivacyMask):
        self.source = source
        self.mask = mask

    @property
    def corrupt_frames(self) -> int:
        return self.source.corrupt_frames

    def read(self) -> Frame:
        frame = self.source.read()
        self.mask.apply(frame.image)
        return frame

    def status(self) -> dict:
        status = getattr(self.source, "status", None)
        return status() if status is not None else {}

    def close(self) -> None:
        self.source.close()


def stream_settings(source: SourceConfig) -> StreamSettings:
    return StreamSettings(kind=source.kind, url=source.url, device=source.device, username=source.username,
                          password=source.password, rtsp_transport=source.rtsp_transport, width=source.width,
                          height=source.height, fps=source.fps, exposure=source.exposure, gain=source.gain,
                          stall_timeout_s=source.stall_timeout_s, reconnect_initial_s=source.reconnect_initial_s,
                          reconnect_max_s=source.reconnect_max_s)


def source_name(source: SourceConfig) -> str:
    """How this source is named in logs, the heartbeat and reports (never with credentials)."""
    if source.kind in REPLAY_KINDS:
        return str(source.path)
    return stream_settings(source).name


def open_source(source: SourceConfig, scene: SceneConfig) -> MaskedSource:
    """The configured source, masked; replays reopen by themselves, live sources reconnect."""
    if source.kind in REPLAY_KINDS:
        path = Path(source.path) if source.path is not None else Path()
        inner: Any = RetryingSource(str(path), lambda: open_replay(source.kind, path, source.loop),
                                    Backoff(source.reconnect_initial_s, source.reconnect_max_s))
    else:
        inner = LiveSource(stream_settings(source))
    return MaskedSource(inner, PrivacyMask(scene.privacy_masks))


def source_problems(source: SourceConfig) -> list[tuple[str, str]]:
    """What `config check` finds on disk: a replay file or folder that is missing or of the wrong
    kind, a V4L2 device path that does not exist. (Loading the config stays pure; this is the
    check's own look at the machine.)"""
    if source.kind == "video_file" and source.path is not None:
        if not source.path.exists():
            return [("source.path", f"video file {source.path} does not exist")]
        if not source.path.is_file():
            return [("source.path", f"{source.path} is not a file (video file expected)")]
        if not os.access(source.path, os.R_OK):
            return [("source.path", f"video file {source.path} cannot be read")]
    if source.kind == "image_folder" and source.path is not None:
        if not source.path.exists():
            return [("source.path", f"image folder {source.path} does not exist")]
        if not source.path.is_dir():
            return [("source.path", f"{source.path} is not a folder (image folder expected)")]
        if not os.access(source.path, os.R_OK | os.X_OK):
            return [("source.path", f"image folder {source.path} cannot be read")]
    if source.kind == "v4l2" and source.device and source.device.startswith("/") \
            and not Path(source.device).exists():
        return [("source.device", f"{source.device} does not exist (camera unplugged or another name?)")]
    return []



def source_readable(config: DeviceConfig) -> list[Problem]:
    """The file check of `config check` and `run` for the source (agent/runtime/preflight.py):
    a replay file or folder that is missing, unreadable or of the wrong kind, or a V4L2 device
    path that does not exist (the capture package's own look at the machine)."""
    return [Problem(key, reason) for key, reason in source_problems(config.source)]


__all__ = ["FrameSource", "MaskedSource", "open_source", "source_name", "source_problems", "source_readable",
           "stream_settings"]
