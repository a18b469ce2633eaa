"""What the console may ask of the agent process itself, beyond its pipeline."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class AgentHooks:
    """Set by `Agent` on its pipeline; None (tests, tools) answers 'unsupported'."""

    reload: Callable[[], None] | None = None   # re-read the config, as SIGHUP does
    restart: Callable[[], None] | None = None  # stop cleanly with EXIT_RESTART for systemd to start again
