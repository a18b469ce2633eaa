"""Real stream servers for the capture tests: GStreamer's RTSP server and an HTTP MJPEG server.

- `RtspServer`: tests/rtsp_serve.py run by the SYSTEM python (python3-gi and the gst-rtsp-server
  typelib are Debian packages, installed by tools/install_system_deps.sh) as a subprocess, so
  a test can kill it and start it again on the same port (a camera dropping off the network).
- `MjpegServer`: multipart/x-mixed-replace JPEG frames over HTTP with Basic auth, the way IP
  cameras serve MJPEG, from a thread of the test process; `corrupt_every` sends a truncated
  JPEG every N frames.
Both serve a clip at its own frame rate, looping.
"""
from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_serve.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def to_h264(clip: Path, out: Path) -> Path:
    """The clip re-encoded as H.264 MP4 (what an RTSP camera sends), keyframe every second."""
    if not out.exists():
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-c:v", "libx264",
                        "-preset", "ultrafast", "-g", "10", "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def require_rtsp_server() -> None:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True)
    if probe.returncode != 0 or shutil.which("ffmpeg") is None:
        pytest.skip("GStreamer RTSP server not installed (run tools/install_system_deps.sh)")


class RtspServer:
    def __init__(self, clip_h264: Path, user: str | None = None, password: str | None = None,
                 port: int | None = None, mount: str = "cam"):
        self.clip = clip_h264
        self.user, self.password = user, password
        self.port = port or free_port()
        self.mount = mount
        self.url = f"rtsp://127.0.0.1:{self.port}/{mount}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "RtspServer":
        args = [SYSTEM_PYTHON, str(RTSP_SCRIPT), str(self.port), self.mount, str(self.clip)]
        if self.user:
            args += [self.user, self.password or ""]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # "READY ..." once it listens
        if not line.startswith("READY") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"RTSP server did not start: {line!r}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class MjpegServer:
    def __init__(self, clip: Path, user: str = "cam", password: str = "pw", fps: float | None = None,
                 corrupt_every: int = 0, port: int | None = None):
        capture = cv2.VideoCapture(str(clip))
        self.fps = fps or capture.get(cv2.CAP_PROP_FPS) or 10.0
        self.jpegs: list[bytes] = []
        while True:
            ok, image = capture.read()
            if not ok:
                break
            self.jpegs.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
        capture.release()
        self.user, self.password = user, password
        self.corrupt_every = corrupt_every
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/video.mjpg"
        self.frames_sent = 0
        self.corrupt_sent = 0
        self.paused = threading.Event()  # set: connections stay open but no frame is sent (a stall)
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "MjpegServer":
        owner = self
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Basic {token}":
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                next_at = time.monotonic()
                index = 0
                try:
                    while owner._server is not None:
                        if owner.paused.is_set():
                            time.sleep(0.05)
                            next_at = time.monotonic()
                            continue
                        data = owner.jpegs[index % len(owner.jpegs)]
                        index += 1
                        if owner.corrupt_every and index % owner.corrupt_every == 0:
                            data = data[: len(data) // 3]  # truncated in transit
                            owner.corrupt_sent += 1
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                        owner.frames_sent += 1
                        next_at += 1.0 / owner.fps
                        time.sleep(max(0.0, next_at - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def solid_clip(path: Path, frames: int = 30, size: tuple[int, int] = (320, 240), fps: float = 10.0) -> Path:
    """A small clip whose frames count up in brightness (for stream mechanics, not vision)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (i * 7) % 250, np.uint8))
    writer.release()
    return path
