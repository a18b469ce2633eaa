"""The bounded frame queue: a camera never waits for OCR, so the oldest frame gives way."""
from __future__ import annotations

import queue
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded FIFO whose `put` never blocks: when full it drops the oldest item and counts it."""

    def __init__(self, maxsize: int):
        self._queue: queue.Queue[T] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._lock:
            while True:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def get(self, timeout: float) -> T:
        """Next item; raises queue.Empty after `timeout` seconds."""
        return self._queue.get(timeout=timeout)

    def discard_all(self) -> int:
        """Drop everything queued (at shutdown) and return how many frames that was."""
        count = 0
        while True:
            try:
                self._queue.get_nowait()
                count += 1
            except queue.Empty:
                break
        with self._lock:
            self.dropped += count
        return count

    def qsize(self) -> int:
        return self._queue.qsize()

    def empty(self) -> bool:
        return self._queue.empty()
