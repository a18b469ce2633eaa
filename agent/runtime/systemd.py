"""sd_notify without a dependency: READY=1, WATCHDOG=1 and STOPPING=1 over $NOTIFY_SOCKET.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the agent runs the same
under a terminal, in tests and under the unit file.
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify failed state=%s error=%s", state, exc)
        return False


def watchdog_interval_s() -> float | None:
    """Half the systemd watchdog period, or None when no watchdog is configured."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
