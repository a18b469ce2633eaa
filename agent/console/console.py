"""The console process: a serial port, a line reader, one session, and nothing that can hang.

The loop reads with a short timeout, so idle logout and a stop request are noticed within
a fraction of a second. Writes have a timeout too: a line nobody reads (a pty with no
client, a stalled adapter) loses that output rather than blocking the console. A port that
fails mid-session (a USB cable pulled) logs the session out and is reopened until it comes
back. Bad lines (noise, a wrong baud rate) get at most one error reply per second, so
garbage cannot make the console flood the line.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import serial

from agent.console.commands import command_table
from agent.console.context import ConsoleContext
from agent.console.lines import LineReader
from agent.console.port import PortError, open_port
from agent.console.session import Reply, Session

log = logging.getLogger(__name__)

BANNER = "PlateGate unit {unit}: technician console. Type `login YOUR-ID`, or `help`."
NOISE_REPLY_EVERY_S = 1.0
REOPEN_EVERY_S = 1.0


class SerialConsole:
    def __init__(self, ctx: ConsoleContext, port: str, baud: int, stop: threading.Event | None = None):
        self.ctx = ctx
        self.port_name = port
        self.baud = baud
        self.stop = stop or threading.Event()
        self.session = Session(ctx, command_table())
        self.reader = self._new_reader()
        self.port: serial.Serial | None = None
        self.dropped_output = 0
        self._last_noise_reply = 0.0
        self._noise_suppressed = 0

    def _new_reader(self) -> LineReader:
        reader = LineReader()
        reader.mask = self.session.masks_echo
        return reader

    def run(self) -> int:
        """Serve until stopped. The first open failing (no port, no permission) is an error: exit 78."""
        self.port = open_port(self.port_name, self.baud)
        log.info("console listening port=%s baud=%d", self.port_name, self.baud)
        self._greet()
        while not self.stop.is_set():
            try:
                self._serve_once()
            except (serial.SerialException, OSError) as exc:
                self._line_lost(exc)
            except Exception:  # a bug here must not end the console: log it, keep serving
                log.exception("console loop error port=%s", self.port_name)
                self.reader = self._new_reader()
                self.stop.wait(0.5)
        self._close()
        return 0

    def _serve_once(self) -> None:
        data = self.port.read(max(1, min(self.port.in_waiting, 4096)))
        while data or self.reader.pending:
            # One line at a time: its answer may turn echo off for the next (a password).
            lines, echo = self.reader.feed(data, one_line=True)
            data = b""
            if echo:
                self._write(echo)
            for line in lines:
                self._answer(self.session.handle(line), noisy=line.text is None)
        reply = self.session.tick()
        if reply is not None:
            self._answer(reply)

    def _answer(self, reply: Reply | None, noisy: bool = False) -> None:
        if noisy:
            now = time.monotonic()
            if now - self._last_noise_reply < NOISE_REPLY_EVERY_S:
                self._noise_suppressed += 1
                return
            self._last_noise_reply = now
            if self._noise_suppressed and reply is not None:
                reply.text += f" ({self._noise_suppressed} more bad lines ignored)"
                self._noise_suppressed = 0
        if reply is not None:
            self._write(self.render(reply))
        self.reader.echo = self.session.mode == "text" and not self.session.expecting_secret
        if self.session.mode == "text" and not self.session.expecting_secret:
            self._write(self.prompt().encode())

    def render(self, reply: Reply) -> bytes:
        if self.session.mode == "json":
            message: dict[str, Any] = {"ok": reply.ok}
            if self.session.request_id:
                message["id"] = self.session.request_id
            if reply.ok:
                if reply.text:
                    message["message"] = reply.text.replace("\r\n", "\n").rstrip()
            else:
                message["error"] = reply.text
                message["reason"] = reply.reason or "error"
            for key, value in reply.data.items():
                message.setdefault(key, value)
            return json.dumps(message, default=str).encode() + b"\n" + reply.binary
        if reply.secret_next:
            return reply.text.encode()
        text = reply.text if reply.ok else f"error: {reply.text}"
        return text.encode() + b"\r\n" if text else b""

    def prompt(self) -> str:
        who = self.session.technician
        return f"plategate {who}> " if who else "plategate> "

    def _greet(self) -> None:
        self.reader.echo = True
        self._write(("\r\n" + BANNER.format(unit=self.ctx.config.unit.id) + "\r\n" + self.prompt()).encode())

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except serial.SerialTimeoutException:
            # Nobody is reading (no client on the line): drop the output, never block.
            self.dropped_output += len(data)
            try:
                self.port.reset_output_buffer()
            except (serial.SerialException, OSError):
                pass

    def _line_lost(self, exc: Exception) -> None:
        log.warning("console port lost port=%s error=%s; reopening", self.port_name, exc)
        self.session.logout("line_lost")
        self.reader = self._new_reader()
        self._close()
        while not self.stop.wait(REOPEN_EVERY_S):
            try:
                self.port = open_port(self.port_name, self.baud)
            except PortError as err:
                log.debug("console port not back yet port=%s error=%s", self.port_name, err)
                continue
            log.info("console port back port=%s", self.port_name)
            self.session.mode = "text"
            self._greet()
            return

    def _close(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            except (serial.SerialException, OSError):
                pass
            self.port = None
