"""Opening a serial port, with the problem and its fix named when it cannot be opened.

Shared by the unit's console and the technician's client (STYLE: serial tools check the
port and its permissions first and say how to fix a problem).
"""
from __future__ import annotations

import os

import serial

DEFAULT_BAUD = 115200


class PortError(OSError):
    """The port cannot be used; the message says why and what to do."""


def open_port(port: str, baud: int = DEFAULT_BAUD, timeout: float = 0.1, write_timeout: float = 2.0) -> serial.Serial:
    if not os.path.exists(port):
        raise PortError(f"no serial port {port} (is the USB-serial cable plugged in? `ls /dev/ttyUSB* "
                        f"/dev/ttyACM* /dev/ttyS*` lists the ports)")
    if not os.access(port, os.R_OK | os.W_OK):
        raise PortError(f"permission denied on {port}: add your user to the dialout group "
                        "(`sudo usermod -aG dialout $USER`, then log out and in again)")
    try:
        return serial.Serial(port, baudrate=baud, bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE,
                             stopbits=serial.STOPBITS_ONE, timeout=timeout, write_timeout=write_timeout,
                             xonxoff=False, rtscts=False, exclusive=True)
    except serial.SerialException as exc:
        if "busy" in str(exc).lower() or "lock" in str(exc).lower():
            raise PortError(f"{port} is in use by another program (close it, or check "
                            f"`fuser {port}`)") from exc
        raise PortError(f"cannot open {port} at {baud} baud: {exc}") from exc
    except ValueError as exc:
        raise PortError(f"cannot open {port}: {exc}") from exc
