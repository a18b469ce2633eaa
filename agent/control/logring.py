"""The agent's recent log lines, kept in memory for the console's `log tail`.

Log lines carry no plate text or secrets by the project's logging rules (STYLE.md), so the
ring holds them as formatted; it is bounded, so a chatty agent cannot grow it.
"""
from __future__ import annotations

import collections
import logging

RING_LINES = 500


class LogRing(logging.Handler):
    def __init__(self, log_format: str, size: int = RING_LINES):
        """`log_format`: the agent's own line format (agent.runtime.logs.FORMAT, handed in by the
        runtime), so `log tail` shows the lines as the journal does."""
        super().__init__(level=logging.DEBUG)
        self._lines: collections.deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter(log_format))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:  # never let logging break the caller
            pass

    def lines(self, n: int) -> list[str]:
        return list(self._lines)[-n:]

    def install(self) -> "LogRing":
        logging.getLogger().addHandler(self)
        return self

    def remove(self) -> None:
        logging.getLogger().removeHandler(self)
