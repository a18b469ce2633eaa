"""The one retry backoff of the agent: exponential, capped, with full jitter.

Used by the stage supervisor (restarting a crashed stage) and by each destination's sender
(reconnecting, retrying after a broker refusal). Full jitter ("Exponential Backoff And
Jitter", AWS architecture blog, 2015): each delay is drawn uniformly from [0, ceiling],
where the ceiling doubles per attempt up to `cap`, so units that lost their broker at the
same moment do not come back in step.
"""
from __future__ import annotations

import random


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
