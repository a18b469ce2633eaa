"""The local control socket between the agent and its technician console.

A unix stream socket in the agent's state dir (``control.sock``, mode 0600, so only the
agent's own user, which the console service runs as, can connect). One request per line,
JSON: ``{"op": "status", ...}``; one reply per line: ``{"ok": true, ...}`` or
``{"ok": false, "error": "what went wrong", "reason": "short_code"}``. Binary payloads
(a JPEG, a bundle) travel base64-encoded in the JSON. The console connects per request, so
an agent restart costs it nothing but the requests made while the agent was down.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator

SOCKET_NAME = "control.sock"
MAX_MESSAGE_BYTES = 32 * 2**20   # a hotlist bundle, base64
UNIX_PATH_MAX = 100              # sun_path is 108 bytes on Linux; keep a margin


class AgentUnavailable(ConnectionError):
    """The agent is not running, or its control socket does not answer."""


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


@contextlib.contextmanager
def reachable(path: Path) -> Iterator[str]:
    """A name for `path` that fits in sun_path: long paths go through /proc/self/fd/<dir fd>."""
    path = Path(path)
    if len(os.fsencode(str(path))) <= UNIX_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode("utf-8") + b"\n"


def read_message(sock: socket.socket, limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any] | None:
    """One JSON line from `sock`; None at a clean end of stream. ValueError for a bad or huge line."""
    chunks: list[bytes] = []
    size = 0
    while True:
        data = sock.recv(65536)
        if not data:
            if chunks:
                raise ValueError("connection closed in the middle of a message")
            return None
        end = data.find(b"\n")
        if end >= 0:
            chunks.append(data[:end])
            break
        chunks.append(data)
        size += len(data)
        if size > limit:
            raise ValueError(f"message longer than {limit} bytes")
    message = json.loads(b"".join(chunks).decode("utf-8"))
    if not isinstance(message, dict):
        raise ValueError("message is not a JSON object")
    return message


class ControlClient:
    """The console's side: one short connection per request."""

    def __init__(self, path: Path, timeout_s: float = 15.0):
        self.path = Path(path)
        self.timeout_s = timeout_s

    def call(self, op: str, timeout_s: float | None = None, **args: Any) -> dict[str, Any]:
        """Send one request; returns the reply (ok or not). Raises AgentUnavailable if none came."""
        try:
            with reachable(self.path) as name, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout_s or self.timeout_s)
                sock.connect(name)
                sock.sendall(encode({"op": op, **args}))
                reply = read_message(sock)
        except FileNotFoundError as exc:
            raise AgentUnavailable(f"the agent is not running (no control socket at {self.path})") from exc
        except (OSError, ValueError) as exc:
            raise AgentUnavailable(f"the agent did not answer on {self.path}: {exc}") from exc
        if reply is None:
            raise AgentUnavailable(f"the agent closed the control socket without answering '{op}'")
        return reply
