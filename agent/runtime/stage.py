"""A pipeline stage: one thread, one job, restarted with backoff when it crashes.

Each stage takes one unit of work per `step()`. An item being worked on is kept in
`pending` until the step succeeds, so a crash mid-item retries the same item after
the restart instead of losing it: that is how an accepted read survives a stage
crash. A stage crashing too often within the window sets `fatal`, and the agent
exits non-zero for systemd to restart it (the watchdog pattern).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from agent.supervision import Backoff, supervise

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0


class Stage:
    """Subclasses implement `step()` (one unit of work, waiting at most ~0.2 s for input),
    `idle()` (True when nothing is in flight) and optionally `finish()` (drain at the end)."""

    name = "stage"

    def __init__(self, stop: threading.Event, upstream: "Stage | None" = None):
        self.stop_requested = stop
        self.upstream = upstream
        self.finished = threading.Event()
        self.fatal = threading.Event()
        self.restarts = 0
        self.last_error: str | None = None
        self.restart_policy = RestartPolicy()
        self._thread: threading.Thread | None = None
        self._crash_times: deque[float] = deque()
        self.progress_at = time.monotonic()  # the heartbeat the systemd watchdog reads (watchdog.py)

    # -- to implement -----------------------------------------------------------------------------
    def step(self) -> None:
        raise NotImplementedError

    def idle(self) -> bool:
        return True

    def finish(self) -> None:
        """Called once after the last step, in the stage's thread (flush what is held)."""

    def should_finish(self) -> bool:
        """A stage ends when its upstream has ended and it has nothing left to do."""
        return self.upstream is not None and self.upstream.finished.is_set() and self.idle()

    # -- supervision ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"stage-{self.name}", daemon=True)
        self._thread.start()

    def running(self) -> bool:
        """Started and not yet ended: a stage the watchdog expects to keep making progress."""
        return self._thread is not None and not self.finished.is_set()

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.finished.is_set()

    def _run(self) -> None:
        backoff = Backoff(base=self.restart_policy.backoff_initial_s,
                          cap=self.restart_policy.backoff_max_s)

        def work() -> None:
            self.progress_at = time.monotonic()
            while not self.should_finish():
                self.step()
                self.progress_at = time.monotonic()
                backoff.reset()
            self.finish()

        supervise(work, backoff, self._crashed, self._wait_restart)
        self.finished.set()

    def _crashed(self, exc: Exception) -> bool:
        """A crashed stage is logged and restarted, within the restart budget."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("stage crashed stage=%s restarts=%d error=%s", self.name, self.restarts,
                  self.last_error, exc_info=exc)
        if not self._may_restart(time.monotonic()):
            log.critical("stage failing too often stage=%s restarts=%d window_s=%s; giving up",
                         self.name, self.restarts, self.restart_policy.window_s)
            self.fatal.set()
            return False
        self.restarts += 1
        return True

    def _wait_restart(self, delay: float) -> None:
        self.progress_at = time.monotonic() + delay  # waiting out a backoff is not hanging
        self.stop_requested.wait(delay)  # a stop request ends the wait early
        log.warning("stage restarted stage=%s restarts=%d", self.name, self.restarts)

    def _may_restart(self, now: float) -> bool:
        policy = self.restart_policy
        self._crash_times.append(now)
        while self._crash_times and now - self._crash_times[0] > policy.window_s:
            self._crash_times.popleft()
        return len(self._crash_times) <= policy.max_restarts
