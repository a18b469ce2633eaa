"""A replay source that comes back by itself: a file or folder that cannot be read at run time
(a USB stick pulled, a network share gone) is retried with jittered backoff and its state logged
once per change, not a traceback per try (the capture stage never crashes for it)."""
from __future__ import annotations

import time
from typing import Callable, NoReturn

from agent.capture.frames import Frame, FrameSource, NoFrame, SourceEnded, SourceError
from agent.capture.health import CLOSED, CONNECTED, CONNECTING, ENDED, LOST, RECONNECTING, Backoff, SourceHealth
from agent.capture.slot import SourceSlot

WAIT_S = 0.25  # longest a read() waits before NoFrame while the source is down


class RetryingSource:
    """Opens `opener()` lazily; a SourceError on open or read closes it and retries later."""

    def __init__(self, name: str, opener: Callable[[], FrameSource], backoff: Backoff):
        self.name = name
        self.health = SourceHealth(name)
        self._opener = opener
        self._backoff = backoff
        self._slot = SourceSlot()
        self._retry_at = 0.0

    @property
    def corrupt_frames(self) -> int:
        return self._slot.corrupt_frames

    def read(self) -> Frame:
        if self._slot.source is None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, WAIT_S))
                raise NoFrame(self.name)
            if self.health.state == LOST:
                self.health.set(RECONNECTING)
            try:
                self._slot.source = self._opener()
            except SourceError as exc:
                self._failed(exc)
        try:
            frame = self._slot.source.read()
        except SourceEnded:
            self.health.set(ENDED)
            raise
        except SourceError as exc:
            self._failed(exc)
        if self.health.state != CONNECTED:
            self._connected()
        return frame

    def _failed(self, exc: Exception) -> NoReturn:
        self._slot.close()
        if self.health.state in (CONNECTING, CONNECTED):
            self.health.set(LOST, str(exc))
        self._retry_at = time.monotonic() + self._backoff.next()
        raise NoFrame(self.name) from exc

    def _connected(self) -> None:
        self.health.set(CONNECTED)
        self._backoff.reset()

    def status(self) -> dict:
        return {**self.health.snapshot(), "corrupt": self.corrupt_frames}

    def close(self) -> None:
        self._slot.close()
        self.health.set(CLOSED)
