"""Connection state of a source and the jittered backoff between attempts to reopen it.

Why its own module: a camera that drops off the network must not flood the log with a
traceback per attempt, nor have every unit of a fleet retry in lock-step. The state is
logged once per change (connected, lost, reconnecting) and shown in the heartbeat.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CONNECTING = "connecting"
CONNECTED = "connected"
LOST = "lost"
RECONNECTING = "reconnecting"
ENDED = "ended"
CLOSED = "closed"


@dataclass
class Backoff:
    """Waits of initial_s, 2x, 4x, ... up to max_s, each drawn from the upper half of its range
    ("equal jitter"): never zero, never synchronised across units."""

    initial_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return ceiling * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        self.attempts = 0


class SourceHealth:
    """The state of one source; `set` logs only when the state changes."""

    def __init__(self, name: str):
        self.name = name  # credentials already redacted
        self.state = CONNECTING
        self.reason: str | None = None
        self.since = time.time()
        self.reconnects = 0    # times the source came back after being lost
        self.losses = 0
        self._lock = threading.Lock()

    def set(self, state: str, reason: str | None = None) -> bool:
        """Move to `state`; returns True (and logs once) when it is a change."""
        with self._lock:
            if state == self.state:
                return False
            previous, self.state, self.since = self.state, state, time.time()
            if reason is not None or state != RECONNECTING:  # reconnecting keeps the reason it was lost for
                self.reason = reason
            if state == LOST:
                self.losses += 1
            if state == CONNECTED and previous in (LOST, RECONNECTING):
                self.reconnects += 1
        level = logging.WARNING if state in (LOST, RECONNECTING) else logging.INFO
        log.log(level, "source %s source=%s previous=%s%s", state, self.name, previous,
                f" reason={reason}" if reason else "")
        return True

    def snapshot(self) -> dict:
        with self._lock:
            return {"state": self.state, "since": round(self.since, 3), "reason": self.reason,
                    "reconnects": self.reconnects, "losses": self.losses}
