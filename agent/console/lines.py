"""Bytes from the serial line in, complete command lines out, whatever the line carries.

A serial line brings more than keystrokes: a terminal's escape sequences (arrow keys),
line noise, a wrong baud rate's garbage, a half-typed command cut off by a pulled cable.
This reader never raises and never grows without bound: a line longer than `max_chars` is
dropped whole (reported once, at its end), a line that is not UTF-8 text is dropped,
control characters other than the editing keys are ignored, and escape sequences are
skipped. Editing keys work as on a shell: Backspace/DEL erase, Ctrl-U clears the line,
Ctrl-C abandons it. When `echo` is on (a human at a terminal) the caller gets the bytes
to echo; secret input (passwords) is read with echo off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MAX_LINE_CHARS = 4096

CR, LF, BS, DEL, CTRL_C, CTRL_U, ESC, TAB = 0x0D, 0x0A, 0x08, 0x7F, 0x03, 0x15, 0x1B, 0x09


@dataclass(frozen=True)
class Line:
    text: str | None            # None: the line was dropped (see `problem`)
    problem: str | None = None  # why it was dropped
    cancelled: bool = False     # Ctrl-C


class LineReader:
    def __init__(self, max_chars: int = MAX_LINE_CHARS):
        self.max_chars = max_chars
        self.echo = False
        # Given the line typed so far, True when what follows is a secret (`config set <secret key> `):
        # its characters are echoed as '*'.
        self.mask: Callable[[str], bool] | None = None
        self._buf = bytearray()
        self._overflow = False
        self._after_cr = False
        self._unread = b""      # bytes after a line, when feeding one line at a time
        self._esc = 0           # 0 none, 1 after ESC, 2 inside CSI, 3 after ESC O (one more byte)
        self.ignored_bytes = 0  # control bytes and escape sequences skipped (noise counter)

    def feed(self, data: bytes, one_line: bool = False) -> tuple[list[Line], bytes]:
        """The lines completed by `data`, and the bytes to echo back (empty when echo is off).

        With `one_line`, stop after the first complete line and keep the rest for the next
        call (`pending`): the caller may need to change `echo` first (a password follows).
        """
        lines: list[Line] = []
        echo = bytearray()
        data, self._unread = self._unread + data, b""
        for position, byte in enumerate(data):
            if one_line and lines:
                self._unread = data[position:]
                break
            if self._esc:
                self._skip_escape(byte)
                continue
            if byte == LF and self._after_cr:
                self._after_cr = False
                continue
            self._after_cr = byte == CR
            if byte in (CR, LF):
                lines.append(self._end_line())
                if self.echo:
                    echo += b"\r\n"
            elif byte in (BS, DEL):
                if self._buf and not self._overflow:
                    self._erase_last()
                    if self.echo:
                        echo += b"\b \b"
            elif byte == CTRL_U:
                if self.echo and not self._overflow:
                    echo += b"\b \b" * self._visible_chars()
                self._reset()
            elif byte == CTRL_C:
                self._reset()
                lines.append(Line("", cancelled=True))
                if self.echo:
                    echo += b"^C\r\n"
            elif byte == ESC:
                self._esc = 1
                self.ignored_bytes += 1
            elif byte < 0x20 and byte != TAB:
                self.ignored_bytes += 1
            else:
                if byte == TAB:
                    byte = 0x20
                if self._overflow:
                    continue
                if len(self._buf) >= self.max_chars * 4:  # bytes, not chars, bound the buffer
                    self._overflow = True
                    continue
                if self.echo:
                    masked = self.mask is not None and self.mask(self._buf.decode("utf-8", errors="replace"))
                    if not masked or byte & 0xC0 != 0x80:  # one '*' per character, not per byte
                        echo.append(0x2A if masked else byte)
                self._buf.append(byte)
        return lines, bytes(echo)

    def _end_line(self) -> Line:
        raw, overflow = bytes(self._buf), self._overflow
        self._reset()
        if overflow:
            return Line(None, f"line too long (more than {self.max_chars} characters); ignored")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Line(None, "line is not text (not UTF-8: noise, or a wrong baud rate?); ignored")
        if len(text) > self.max_chars:
            return Line(None, f"line too long (more than {self.max_chars} characters); ignored")
        if not text.isprintable():
            return Line(None, "line holds unprintable characters; ignored")
        return Line(text)

    def _skip_escape(self, byte: int) -> None:
        self.ignored_bytes += 1
        if self._esc == 1:
            self._esc = 2 if byte == ord("[") else 3 if byte == ord("O") else 0
        elif self._esc == 2:
            if 0x40 <= byte <= 0x7E:
                self._esc = 0
            elif not 0x20 <= byte <= 0x3F:  # not a CSI parameter byte: the sequence was broken
                self._esc = 0
        else:
            self._esc = 0

    def _erase_last(self) -> None:
        # Erase one UTF-8 character (continuation bytes are 10xxxxxx).
        while self._buf:
            byte = self._buf.pop()
            if byte & 0xC0 != 0x80:
                break

    def _visible_chars(self) -> int:
        return len(self._buf.decode("utf-8", errors="replace"))

    def _reset(self) -> None:
        self._buf.clear()
        self._overflow = False

    @property
    def pending(self) -> bool:
        """Bytes are waiting behind a line returned by a one-line feed."""
        return bool(self._unread)

    @property
    def partial(self) -> bool:
        """A line has been started but not finished."""
        return bool(self._buf) or self._overflow
