"""The one supervision loop and the one retry backoff of the agent.

`supervise()` runs a piece of work until it returns and, when it raises, asks the caller
whether to go on, waits a backoff delay and runs it again. The pipeline stages
(agent/runtime/stage.py: restarted within a budget, then fatal) and the destination
senders (agent/delivery/service.py: never give up, drop the link) both run under it.

`Backoff`: exponential, capped, with full jitter ("Exponential Backoff And Jitter", AWS
architecture blog, 2015): each delay is drawn uniformly from [0, ceiling], where the
ceiling doubles per attempt up to `cap`, so units that lost their broker at the same
moment do not come back in step.
"""
from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """delay = uniform(0, min(cap, base * 2**attempt)), never below `floor`."""

    def __init__(self, base: float = 0.5, cap: float = 60.0, rng: random.Random | None = None,
                 floor: float = 0.0) -> None:
        self.base, self.cap, self.floor = base, cap, floor
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The largest delay the next call may return."""
        return max(self.floor, min(self.cap, self.base * (2 ** min(self.attempt, 30))))

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        self.attempt += 1
        return max(self.floor, self._rng.uniform(0.0, ceiling))

    def reset(self) -> None:
        self.attempt = 0


def supervise(work: Callable[[], None], backoff: Backoff,
              on_crash: Callable[[Exception], bool], wait: Callable[[float], object]) -> bool:
    """Run `work()` until it returns (True). When it raises, `on_crash(exc)` logs it and
    says whether to go on; if so, wait `backoff.next_delay()` with `wait` (which a stop
    request should cut short) and run `work()` again; if not, return False."""
    while True:
        try:
            work()
            return True
        except Exception as exc:  # supervised work is restarted, never silently lost
            if not on_crash(exc):
                return False
            wait(backoff.next_delay())
