"""Live sources: a V4L2 camera, an RTSP stream or an HTTP(S) MJPEG stream, through OpenCV.

Why a grabber thread: a camera delivers frames at its own rate whatever recognition is
doing. If nobody reads them, they pile up in the decoder's and the network's buffers and
are processed seconds late. The grabber reads every frame as it comes and keeps only the
newest; `read()` hands that one over, and a frame replaced before anyone took it is
counted in `stale_dropped`. The same thread notices a lost stream (a failed read or no
frame for `stall_timeout_s`), reopens it with jittered backoff, and records each change
of state once (agent.capture.health).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from agent.capture.frames import Frame, NoFrame, SourceEnded, as_bgr
from agent.capture.health import CLOSED, CONNECTED, CONNECTING, LOST, RECONNECTING, Backoff, SourceHealth
from agent.capture.urls import redact, with_credentials

log = logging.getLogger(__name__)

READ_WAIT_S = 0.25          # longest a read() waits for a new frame before NoFrame
FAILED_READS_LOST = 3       # consecutive failed reads that mean the stream is gone
_ENV_LOCK = threading.Lock()  # OPENCV_FFMPEG_CAPTURE_OPTIONS is process-wide, read at open time


@dataclass(frozen=True)
class StreamSettings:
    """What opening a live source needs; built from the config's [source] table."""

    kind: str                       # "rtsp", "http_mjpeg" or "v4l2"
    url: str | None = None          # without credentials
    device: str | None = None
    username: str | None = None
    password: str | None = None
    rtsp_transport: str = "tcp"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    exposure: float | None = None
    gain: float | None = None
    stall_timeout_s: float = 5.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    @property
    def name(self) -> str:
        """How the source is named in logs and the heartbeat: never with credentials."""
        return self.device if self.kind == "v4l2" else redact(self.url or "")


def open_capture(settings: StreamSettings) -> cv2.VideoCapture:
    """One OpenCV capture for the settings (FFmpeg back end for streams, V4L2 for cameras)."""
    timeout_ms = int(settings.stall_timeout_s * 1000)
    if settings.kind == "v4l2":
        device = settings.device or "0"
        target: int | str = int(device) if device.isdigit() else device
        capture = cv2.VideoCapture(target, cv2.CAP_V4L2)
        for prop, value in ((cv2.CAP_PROP_BUFFERSIZE, 1), (cv2.CAP_PROP_FRAME_WIDTH, settings.width),
                            (cv2.CAP_PROP_FRAME_HEIGHT, settings.height), (cv2.CAP_PROP_FPS, settings.fps),
                            (cv2.CAP_PROP_AUTO_EXPOSURE, 1 if settings.exposure is not None else None),
                            (cv2.CAP_PROP_EXPOSURE, settings.exposure), (cv2.CAP_PROP_GAIN, settings.gain)):
            if value is not None and capture.isOpened() and not capture.set(prop, float(value)):
                log.info("camera setting not supported by the driver device=%s property=%d", device, prop)
        return capture
    url = with_credentials(settings.url or "", settings.username, settings.password)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    with _ENV_LOCK:
        previous = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
        if settings.kind == "rtsp":
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{settings.rtsp_transport}"
        try:
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if previous is None:
                os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
            else:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = previous


def _quiet_decoder_logs() -> None:
    """FFmpeg and OpenCV print a line per failed attempt to stderr, bypassing our logging (and
    the URL they print can carry the credentials); our own state log says it once instead.
    Set when this module is imported (OpenCV reads them when its FFmpeg back end first starts),
    unless the operator set them."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


_quiet_decoder_logs()


class LiveSource:
    """Newest-frame reader over a live OpenCV capture, reconnecting by itself.

    Counters (read from any thread): `frames_grabbed`, `stale_dropped` (newer frame came first),
    `corrupt_frames` (empty or wrongly sized images, failed reads between good ones), and
    `health` (state, losses, reconnects).
    """

    def __init__(self, settings: StreamSettings,
                 opener: Callable[[StreamSettings], cv2.VideoCapture] = open_capture,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.name = settings.name
        self.health = SourceHealth(self.name)
        self.frames_grabbed = 0
        self.stale_dropped = 0
        self.corrupt_frames = 0
        self.attempts = 0
        self._opener = opener
        self._clock = clock
        self._backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._taken_index = -1
        self._closed = threading.Event()
        self._capture: cv2.VideoCapture | None = None
        self._thread = threading.Thread(target=self._grab_loop, name=f"grab-{settings.kind}", daemon=True)
        self._thread.start()

    # -- consumer side ------------------------------------------------------------------------------
    def read(self, wait_s: float = READ_WAIT_S) -> Frame:
        """The newest frame not yet handed out; NoFrame if none comes within `wait_s`."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while self._latest is None or self._latest.index <= self._taken_index:
                if self._closed.is_set():
                    raise SourceEnded(self.name)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NoFrame(self.name)
                self._cond.wait(left)
            frame = self._latest
            self._taken_index = frame.index
            return frame

    def status(self) -> dict:
        return {**self.health.snapshot(), "frames_grabbed": self.frames_grabbed,
                "stale_dropped": self.stale_dropped, "corrupt": self.corrupt_frames,
                "attempts": self.attempts}

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        # A read blocked on a stalled stream returns within stall_timeout_s; shutdown does not
        # wait for it (the thread is a daemon, releases its capture and ends by itself).
        self._thread.join(timeout=1.0)
        self.health.set(CLOSED)

    # -- grabber thread -----------------------------------------------------------------------------
    def _grab_loop(self) -> None:
        """Open, read until lost, wait, reopen. While down, failed attempts change nothing, so
        an outage logs three lines (lost, reconnecting, connected), not one per attempt."""
        while not self._closed.is_set():
            if self.health.state == LOST:
                self.health.set(RECONNECTING)
            self.attempts += 1
            capture, reason = self._open()
            if capture is not None:
                reason = self._read_until_lost(capture)
                capture.release()
            if self._closed.is_set():
                break
            if self.health.state in (CONNECTING, CONNECTED):
                self.health.set(LOST, reason)
            if self._closed.wait(self._backoff.next()):
                break

    def _open(self) -> tuple[cv2.VideoCapture | None, str]:
        try:
            capture = self._opener(self.settings)
        except Exception as exc:  # an opener failure is a failed attempt, never a crash
            return None, f"open failed: {type(exc).__name__}"
        if not capture.isOpened():
            capture.release()
            return None, "cannot open"
        return capture, ""

    def _read_until_lost(self, capture: cv2.VideoCapture) -> str:
        """Read frames until the stream fails; returns why it was given up."""
        failures = 0
        last_good = time.monotonic()
        shape: tuple[int, ...] | None = None
        while not self._closed.is_set():
            ok, image = capture.read()
            now = time.monotonic()
            if not ok or image is None or image.size == 0:
                failures += 1
                if failures >= FAILED_READS_LOST:
                    return f"no frame after {failures} reads"
                if now - last_good > self.settings.stall_timeout_s:
                    return f"stalled for {now - last_good:.1f}s"
                self._closed.wait(0.01)
                continue
            if shape is not None and image.shape != shape:  # a truncated or misdecoded frame
                self.corrupt_frames += 1
                continue
            if failures:
                self.corrupt_frames += failures  # bad reads between good frames: skipped frames
                failures = 0
            if shape is None:
                shape = image.shape
                self.health.set(CONNECTED)
                self._backoff.reset()
            last_good = now
            self._publish(as_bgr(image), now)
        return "closed"

    def _publish(self, image: np.ndarray, mono: float) -> None:
        frame = Frame(image=image, captured_at=self._clock(), index=self.frames_grabbed, origin=self.name,
                      monotonic=mono)
        with self._cond:
            if self._latest is not None and self._latest.index > self._taken_index:
                self.stale_dropped += 1
            self._latest = frame
            self.frames_grabbed += 1
            self._cond.notify_all()
