"""One technician session on the serial line: login, the command table, replies in text or JSON.

`Session.handle(line)` takes one complete line and returns one `Reply`; it never raises
(a bug in a command becomes an error reply). Before login only `help`, `mode`, `login`
and `whoami` work. Lines that are secrets (passwords) are read with echo off, are never
logged, and never reach the audit log; what is audited is who did what (technician id,
command, keys changed, reason for a refusal).
"""
from __future__ import annotations

import logging
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from agent import events
from agent.config.schema import ID_PATTERN
from agent.console.auth import Lockout, hash_password, password_problem, verify_password
from agent.console.context import ConsoleContext
from agent.console.lines import Line
from agent.console.settings import EditError, is_secret

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"@([A-Za-z0-9_-]{1,32})")
SECRET_VALUE_AHEAD = re.compile(r"\s*(?:@\S+\s+)?config\s+set\s+(\S+)\s")


@dataclass
class Reply:
    ok: bool = True
    text: str = ""                                   # for people (text mode) and as "message"/"error"
    data: dict[str, Any] = field(default_factory=dict)  # for programs (json mode)
    binary: bytes = b""                              # json mode: raw bytes after the JSON line
    reason: str | None = None                        # short machine code for an error
    secret_next: bool = False                        # the next line is a secret: echo off


def error(text: str, reason: str = "error", **data: Any) -> Reply:
    return Reply(ok=False, text=text, reason=reason, data=data)


@dataclass(frozen=True)
class Command:
    words: str                      # "config set"
    args: str                       # "KEY VALUE"
    help: str
    run: Callable[["Session", list[str]], Reply]
    needs_login: bool = True
    hidden: bool = False            # not listed by `help` (the refused stored-reads words)


class Session:
    def __init__(self, ctx: ConsoleContext, commands: dict[str, Command], clock: Callable[[], float] = time.monotonic):
        self.ctx = ctx
        self.commands = commands
        self.clock = clock
        self.mode = "text"
        self.technician: str | None = None
        self.last_input = clock()
        self._next: Callable[[str], Reply] | None = None  # a prompt waiting for its (secret) answer
        self._request_id: str | None = None

    # --- the line -----------------------------------------------------------------------------------

    @property
    def expecting_secret(self) -> bool:
        return self._next is not None

    def handle(self, line: Line) -> Reply | None:
        """The reply to one line (None: nothing to say, e.g. an empty line)."""
        self.last_input = self.clock()
        if line.text is None:
            self._request_id = None  # noise answers no one's request
            return error(line.problem or "line ignored", "bad_line")
        if self._next is not None:
            answer, self._next = self._next, None
            if line.cancelled:
                return error("cancelled", "cancelled")
            return self._safely(lambda: answer(line.text))
        if line.cancelled:
            return None
        text = line.text.strip()
        self._request_id = None
        match = REQUEST_ID.match(text)
        if match:
            self._request_id = match.group(1)
            text = text[match.end():].strip()
        if not text:
            return None
        try:
            words = shlex.split(text)
        except ValueError as exc:
            return error(f"cannot read the line: {exc} (quote values with spaces: \"like this\")", "usage")
        return self._safely(lambda: self._dispatch(words))

    @property
    def request_id(self) -> str | None:
        return self._request_id

    def _safely(self, work: Callable[[], Reply]) -> Reply:
        try:
            return work()
        except EditError as exc:
            return error(str(exc), exc.reason)
        except Exception as exc:  # a command's bug must not end the console
            log.exception("console command failed")
            return error(f"internal error: {type(exc).__name__}: {exc}", "internal")

    def _dispatch(self, words: list[str]) -> Reply:
        command, args = self.find(words)
        if command is None:
            return error(f"unknown command '{' '.join(words[:2])}'; type `help`", "unknown_command")
        if command.needs_login and self.technician is None:
            return error(f"log in first: login YOUR-ID", "not_logged_in")
        log.debug("console command=%s technician=%s", command.words, self.technician)  # never the arguments
        return command.run(self, args)

    def find(self, words: list[str]) -> tuple[Command | None, list[str]]:
        for take in (2, 1):
            key = " ".join(words[:take]).lower()
            if len(words) >= take and key in self.commands:
                return self.commands[key], words[take:]
        return None, words

    # --- idle and line loss -----------------------------------------------------------------------

    def tick(self) -> Reply | None:
        """Called often by the console loop: logs an idle session out."""
        idle = self.clock() - self.last_input
        if idle < self.ctx.console.idle_timeout_s:
            return None
        if self._next is not None:
            self._next = None
            self.last_input = self.clock()
            return error("prompt timed out", "timeout")
        if self.technician is None:
            return None
        self.logout("idle")
        return error(f"logged out after {self.ctx.console.idle_timeout_s:.0f} s without input", "idle_logout")

    def logout(self, reason: str) -> None:
        if self.technician is not None:
            self.ctx.audit(events.CONSOLE_LOGOUT, technician=self.technician, reason=reason)
            log.info("console logout technician=%s reason=%s", self.technician, reason)
        self.technician = None
        self._next = None
        self.ctx.editor.discard()

    # --- login ----------------------------------------------------------------------------------------

    def login(self, technician: str) -> Reply:
        if not re.fullmatch(ID_PATTERN, technician):
            return error("a technician id is letters, digits, '.', '_' or '-' (at most 64)", "usage")
        lockout = self.lockout()
        wait = lockout.remaining_s()
        if wait > 0:
            return error(f"console locked after {lockout.failures} failed login(s): try again in "
                         f"{_duration(wait)}", "locked", retry_after_s=round(wait))
        if self.ctx.password_hash() is None:
            self._next = lambda first: self._first_password(technician, first)
            return Reply(text="No console password is set on this unit. Choose one now "
                              "(at least 10 characters; it is not shown).\r\nNew password: ",
                         data={"need": "new_password"}, secret_next=True)
        self._next = lambda password: self._check_password(technician, password)
        return Reply(text="Password: ", data={"need": "password"}, secret_next=True)

    def lockout(self) -> Lockout:
        c = self.ctx.console
        return Lockout(self.ctx.lockout_path, c.lockout_failures, c.lockout_s)

    def _check_password(self, technician: str, password: str) -> Reply:
        lockout = self.lockout()
        if lockout.remaining_s() > 0:  # locked meanwhile (another console process)
            return error(f"console locked: try again in {_duration(lockout.remaining_s())}", "locked")
        stored = self.ctx.password_hash()
        if stored is not None and verify_password(password, stored):
            lockout.succeeded()
            return self._logged_in(technician)
        wait = lockout.failed()
        self.ctx.audit(events.CONSOLE_LOGIN_FAILED, technician=technician, failures=lockout.failures,
                       locked_for_s=round(wait))
        log.warning("console login failed technician=%s failures=%d wait_s=%.0f", technician,
                    lockout.failures, wait)
        if lockout.failures >= self.ctx.console.lockout_failures:
            return error(f"wrong password; console locked for {_duration(wait)}", "locked",
                         retry_after_s=round(wait))
        return error(f"wrong password; next try in {_duration(wait)}", "wrong_password", retry_after_s=round(wait))

    def _first_password(self, technician: str, first: str) -> Reply:
        problem = password_problem(first)
        if problem:
            return error(f"{problem}; log in again to choose one", "weak_password")
        self._next = lambda second: self._set_first_password(technician, first, second)
        return Reply(text="Repeat password: ", data={"need": "repeat_password"}, secret_next=True)

    def _set_first_password(self, technician: str, first: str, second: str) -> Reply:
        if first != second:
            return error("the two passwords differ; nothing was set", "mismatch")
        if self.ctx.password_hash() is not None:  # set meanwhile: set-once means once
            return error("a console password was set meanwhile; log in with it", "already_set")
        self.ctx.editor.set_password_hash(hash_password(first))
        self.ctx.audit(events.CONSOLE_PASSWORD_SET, technician=technician, how="first")
        log.info("console password set technician=%s how=first", technician)
        return self._logged_in(technician)

    def _logged_in(self, technician: str) -> Reply:
        self.technician = technician
        self.ctx.audit(events.CONSOLE_LOGIN, technician=technician)
        log.info("console login technician=%s", technician)
        return Reply(text=f"logged in as {technician}; `help` lists the commands", data={"technician": technician})

    def change_password(self) -> Reply:
        self._next = self._passwd_current
        return Reply(text="Current password: ", data={"need": "password"}, secret_next=True)

    def _passwd_current(self, current: str) -> Reply:
        stored = self.ctx.password_hash()
        if stored is None or not verify_password(current, stored):
            lockout = self.lockout()
            wait = lockout.failed()
            self.ctx.audit(events.CONSOLE_LOGIN_FAILED, technician=self.technician, failures=lockout.failures,
                           locked_for_s=round(wait), command="passwd")
            self.logout("wrong_password")
            return error("wrong password; logged out", "wrong_password")
        self._next = self._passwd_new
        return Reply(text="New password: ", data={"need": "new_password"}, secret_next=True)

    def _passwd_new(self, new: str) -> Reply:
        problem = password_problem(new)
        if problem:
            return error(problem, "weak_password")
        self._next = lambda again: self._passwd_set(new, again)
        return Reply(text="Repeat password: ", data={"need": "repeat_password"}, secret_next=True)

    def _passwd_set(self, new: str, again: str) -> Reply:
        if new != again:
            return error("the two passwords differ; nothing was changed", "mismatch")
        self.ctx.editor.set_password_hash(hash_password(new))
        self.ctx.audit(events.CONSOLE_PASSWORD_SET, technician=self.technician, how="changed")
        return Reply(text="console password changed")

    def masks_echo(self, typed: str) -> bool:
        """For the line reader: the rest of `typed` is a secret value (echo '*')."""
        match = SECRET_VALUE_AHEAD.match(typed)
        return bool(match) and is_secret(match.group(1))

    def ask_secret(self, prompt: str, then: Callable[[str], Reply]) -> Reply:
        """Ask for a value with echo off; `then` gets the answer."""
        self._next = then
        return Reply(text=prompt, data={"need": "secret"}, secret_next=True)

    def refuse(self, command: str, reason: str, text: str, key: str | None = None) -> Reply:
        """Refuse and audit (a policy key, stored reads): the record names who, what and why."""
        fields: dict[str, Any] = {"technician": self.technician, "command": command, "reason": reason}
        if key is not None:
            fields["key"] = key
        self.ctx.audit(events.CONSOLE_REFUSED, **fields)
        log.warning("console refused technician=%s command=%s reason=%s key=%s", self.technician, command,
                    reason, key)
        return error(text, reason)


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
