"""systemd health: READY once started, WATCHDOG=1 only while every stage makes progress, STATUS= line.

Why: a stage that crashes is restarted by its supervisor (and the agent exits 70 when it keeps
crashing), but a stage that *hangs* (a read blocked forever on a dead camera, a deadlock)
raises nothing. Every stage beats after each step (`Stage.progress_at`), every delivery sender
on each turn of its loop; when one has not
beaten for `stall_after_s` the pings stop, and systemd's WatchdogSec restarts the agent.
The STATUS= line (`systemctl status plategate`) says in one line what the agent is doing,
and names the stalled stage when there is one.

Outside systemd (no NOTIFY_SOCKET) every message is a no-op (agent/runtime/systemd.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from agent.runtime import systemd

log = logging.getLogger(__name__)

# The longest a stage may go without finishing a step. Each step waits at most ~0.2 s for
# input; the slowest legitimate step is capture's pacing wait at the lowest frame rate
# (1 / 0.1 fps = 10 s) or one frame's recognition on a slow CPU (~2 s).
STALL_AFTER_S = 20.0
STATUS_EVERY_S = 5.0


class Beating(Protocol):
    """What the watchdog reads from a stage or a sender (Stage and delivery's _Sender have it)."""

    name: str
    progress_at: float  # time.monotonic() of the last finished step

    def running(self) -> bool: ...


@dataclass(frozen=True)
class Stall:
    stage: str
    silent_s: float


def stalls(stages: Sequence[Beating], now: float, stall_after_s: float) -> list[Stall]:
    """Running stages that have made no progress for longer than `stall_after_s`."""
    return [Stall(s.name, now - s.progress_at) for s in stages
            if s.running() and now - s.progress_at > stall_after_s]


def status_line(stats: dict[str, Any], stalled: Sequence[Stall]) -> str:
    """One line for systemd's STATUS=: health first, then the figures an operator asks about."""
    queued = sum(stats.get("queue_depth", {}).values())
    restarts = sum(stats.get("stage_restarts", {}).values())
    policy = stats.get("policy_version")
    figures = (f"frames {stats.get('frames_read', 0)} (dropped {stats.get('frames_dropped', 0)}), "
               f"reads {stats.get('reads_accepted', 0)}, queued {queued}, "
               f"policy {'v' + str(policy) if policy is not None else 'none'}, restarts {restarts}")
    if stalled:
        names = ", ".join(f"{s.stage} silent {int(s.silent_s)} s" for s in stalled)
        return f"STALLED ({names}): {figures}"
    return f"running: {figures}"


@dataclass
class HealthNotifier:
    """Sends READY, STATUS and WATCHDOG to systemd from the agent's main loop (`tick` each turn)."""

    beating: Callable[[], Sequence[Beating]]  # the stages and senders in place now
    stats: Callable[[], dict[str, Any]]
    ping_every_s: float | None = field(default_factory=systemd.watchdog_interval_s)
    stall_after_s: float = STALL_AFTER_S
    status_every_s: float = STATUS_EVERY_S
    _next_ping: float = 0.0
    _next_status: float = 0.0
    _was_stalled: bool = False

    def ready(self) -> None:
        systemd.notify("READY=1\nSTATUS=" + self._status([]))

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        stalled = stalls(self.beating(), now, self.stall_after_s)
        if bool(stalled) != self._was_stalled:
            self._was_stalled = bool(stalled)
            self._next_status = now  # a change of health is reported at once
            if stalled:
                log.error("watchdog pings stopped: stage made no progress stages=%s",
                          ",".join(f"{s.stage}:{s.silent_s:.0f}s" for s in stalled))
            else:
                log.warning("watchdog pings resumed: every stage is making progress again")
        if now >= self._next_status:
            systemd.notify("STATUS=" + self._status(stalled))
            self._next_status = now + self.status_every_s
        if self.ping_every_s and not stalled and now >= self._next_ping:
            systemd.notify("WATCHDOG=1")
            self._next_ping = now + self.ping_every_s

    def stopping(self) -> None:
        systemd.notify("STOPPING=1\nSTATUS=stopping")

    def _status(self, stalled: Sequence[Stall]) -> str:
        try:
            return status_line(self.stats(), stalled)
        except Exception as exc:  # the figures are a courtesy; never let them stop the pings
            log.warning("status figures unavailable error=%s", exc)
            return status_line({}, stalled)
