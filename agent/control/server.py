"""The agent's side of the control socket: a small server thread that can never take the pipeline down.

Every request runs in its own short-lived daemon thread with every exception caught and
turned into an error reply, so a bad request, a client that vanishes, or a bug in an
operation costs that one request and nothing else. At most `MAX_CLIENTS` requests run at
once (the console is one serial line: more means something is wrong). If the socket cannot
be created the agent logs it and runs on without a console.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable

from agent.control.protocol import encode, reachable, read_message

log = logging.getLogger(__name__)

MAX_CLIENTS = 4
CLIENT_TIMEOUT_S = 120.0   # a camera test or an MQTT test may take a while; the client waits

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]):
        self.path = Path(path)
        self.handlers = handlers
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # a socket file left by a killed agent
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)       # created 0600: the agent's user only
        try:
            with reachable(self.path) as name:
                sock.bind(name)
        finally:
            os.umask(old_umask)
        sock.listen(MAX_CLIENTS)
        sock.settimeout(0.2)  # how soon stop() is noticed: it runs inside the agent's 5 s shutdown
        self._listener = sock
        self._thread = threading.Thread(target=self._accept_loop, name="control-server", daemon=True)
        self._thread.start()
        log.info("control socket listening path=%s", self.path)

    def stop(self, timeout: float = 0.5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._wake()
            self._thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass

    def _wake(self) -> None:
        """Connect once, so that the accept loop sees the stop now rather than at its next
        timeout (the agent's shutdown waits for it)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, reachable(self.path) as name:
                sock.settimeout(0.2)
                sock.connect(name)
        except OSError:
            pass  # not listening any more: nothing to wake

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                log.error("control socket accept failed error=%s", exc)
                self._stop.wait(0.5)
                continue
            if self._stop.is_set():   # the wake-up from stop()
                conn.close()
                return
            if not self._slots.acquire(blocking=False):
                _reply_quietly(conn, {"ok": False, "reason": "busy",
                                      "error": "the agent is already serving other console requests"})
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="control-request", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(CLIENT_TIMEOUT_S)
            while not self._stop.is_set():
                try:
                    request = read_message(conn)
                except (ValueError, UnicodeDecodeError) as exc:
                    _reply_quietly(conn, {"ok": False, "reason": "bad_request", "error": f"bad request: {exc}"})
                    return
                if request is None:
                    return
                _reply_quietly(conn, self.dispatch(request))
        except OSError:
            pass  # the console went away: nothing to answer
        finally:
            conn.close()
            self._slots.release()

    def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "reason": "unknown_op", "error": f"unknown control operation {op!r}"}
        try:
            reply = handler(request)
        except Exception as exc:  # a bug in one operation must not reach the pipeline
            log.exception("control operation failed op=%s", op)
            return {"ok": False, "reason": "internal", "error": f"{op} failed: {type(exc).__name__}: {exc}"}
        return {"ok": True, **reply} if "ok" not in reply else reply


def _reply_quietly(conn: socket.socket, message: dict[str, Any]) -> None:
    try:
        conn.sendall(encode(message))
    except OSError:
        pass
