"""A serial cable made of two pseudo-terminal pairs, for console tests with pyserial on both ends.

    client (pyserial on pty A's slave) ⇄ A master ⇄ relay threads ⇄ B master ⇄ console (pyserial on pty B's slave)

The relay is the cable: it can be paced to a baud rate (10 bits per byte on the wire, as
8N1 sends them; a bare pty has no baud limit), pulled (bytes in flight are lost both ways)
and plugged back, and it can inject noise towards the console. It counts the bytes each
way, so a test can state what would cross a real line.
"""
from __future__ import annotations

import os
import select
import threading
import time
import tty


class PtyPair:
    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave  # held open so the pty lives while the ends come and go

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class Cable:
    def __init__(self, baud: int | None = None) -> None:
        self.client_end = PtyPair()
        self.console_end = PtyPair()
        self.baud = baud
        self.plugged = threading.Event()
        self.plugged.set()
        self.bytes_to_console = 0
        self.bytes_to_client = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._relay, args=(self.client_end.master, self.console_end.master, "to_console"),
                             daemon=True, name="cable-to-console"),
            threading.Thread(target=self._relay, args=(self.console_end.master, self.client_end.master, "to_client"),
                             daemon=True, name="cable-to-client"),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def client_port(self) -> str:
        return self.client_end.path

    @property
    def console_port(self) -> str:
        return self.console_end.path

    def pull(self) -> None:
        self.plugged.clear()

    def plug(self) -> None:
        self.plugged.set()

    def inject(self, data: bytes) -> None:
        """Noise on the line towards the console (as if from the client side)."""
        with self._lock:
            _write_all(self.console_end.master, data)

    def _relay(self, src: int, dst: int, direction: str) -> None:
        next_free = time.monotonic()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(src, 256)
            except OSError:
                time.sleep(0.05)  # the other end is closed for the moment
                continue
            if not self.plugged.is_set():
                continue  # pulled: the bytes are lost
            if self.baud:
                now = time.monotonic()
                next_free = max(next_free, now) + len(data) * 10 / self.baud
                delay = next_free - now
                if delay > 0:
                    time.sleep(delay)
            if direction == "to_console":
                self.bytes_to_console += len(data)
            else:
                self.bytes_to_client += len(data)
            try:
                with self._lock if direction == "to_console" else _NoLock():
                    _write_all(dst, data)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(1.0)
        self.client_end.close()
        self.console_end.close()


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + 5.0
    while view and time.monotonic() < deadline:
        _, writable, _ = select.select([], [fd], [], 0.1)
        if writable:
            written = os.write(fd, view)
            view = view[written:]
