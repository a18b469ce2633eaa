"""paho's own logger, with its reconnect noise turned down to DEBUG.

paho logs "Client is not connected ..." at ERROR on every pass of its network loop while a
reconnect is pending (the socket is gone until the next attempt), so a broker that is down
for a minute wrote a stream of ERROR lines about a state the agent already reports once, at
WARNING, with the destination named ("link lost", "status broker connect failed"). The
message stays visible at DEBUG, where paho's logger is opened when the agent runs at DEBUG.
"""
from __future__ import annotations

import logging

PAHO_LOGGER = "paho.mqtt.client"
RECONNECT_NOISE = ("Client is not connected",)


class ReconnectNoise(logging.Filter):
    """Relabel paho's reconnect noise as DEBUG; drop it unless paho's logger shows DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.msg).startswith(RECONNECT_NOISE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def paho_logger() -> logging.Logger:
    """The logger to hand to `Client.enable_logger`, with the filter installed once."""
    logger = logging.getLogger(PAHO_LOGGER)
    if not any(isinstance(f, ReconnectNoise) for f in logger.filters):
        logger.addFilter(ReconnectNoise())
    return logger
