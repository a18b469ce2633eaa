"""Logging set-up: one line per event, key=value fields, level from config."""
from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s thread=%(threadName)s %(message)s"


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_plategate", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._plategate = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
    # paho's own logger at debug makes broker problems visible when asked for
    logging.getLogger("paho").setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
