"""The console's password: an scrypt hash in the config, and a lockout that survives restarts.

There is no default password. The hash string is ``scrypt$<log2 N>$<r>$<p>$<salt>$<hash>``
(base64), so the cost can be raised later without breaking older hashes. Failed logins add
growing delays: each of the first ``failures_to_lock - 1`` failures makes the next attempt
wait 2, 4, ... seconds; the ``failures_to_lock``-th locks the console for ``lockout_s``
(15 min by default), and every further failure doubles that, up to a day. The count is
written atomically to the state dir after every failure, so pulling the power or
restarting the console does not reset it; a successful login clears it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from agent.atomic import write_atomic

log = logging.getLogger(__name__)

SCRYPT_LOG2_N = 15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 256
MAX_LOCK_S = 86400.0
FORGET_FAILURES_AFTER_S = 86400.0  # an old typo should not count towards today's lockout


def hash_password(password: str, *, log2_n: int = SCRYPT_LOG2_N) -> str:
    salt = os.urandom(16)
    digest = _scrypt(password, salt, log2_n, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(log2_n), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches the stored hash; a malformed hash matches nothing."""
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = _scrypt(password, base64.b64decode(salt, validate=True), int(log2_n), int(r), int(p),
                      length=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def password_problem(password: str) -> str | None:
    """Why `password` may not be used, or None."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a console password needs at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"a console password has at most {MAX_PASSWORD_CHARS} characters"
    if not password.isprintable():
        return "a console password may hold printable characters only"
    return None


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, length: int = 32) -> bytes:
    if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    n = 1 << log2_n
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=256 * n * r + 2**20)


@dataclass
class LockoutState:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class Lockout:
    """Failed-login bookkeeping, persisted in `path` (JSON, replaced atomically)."""

    def __init__(self, path: Path, failures_to_lock: int = 3, lockout_s: float = 900.0,
                 clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.failures_to_lock = failures_to_lock
        self.lockout_s = lockout_s
        self.clock = clock
        self.state = self._load()

    def _load(self) -> LockoutState:
        try:
            raw = json.loads(self.path.read_text())
            return LockoutState(failures=int(raw["failures"]), locked_until=float(raw["locked_until"]),
                                last_failure=float(raw.get("last_failure", 0.0)))
        except FileNotFoundError:
            return LockoutState()
        except (OSError, ValueError, KeyError, TypeError):
            # Unreadable: fail closed (locked), never open.
            log.error("console lockout file unreadable path=%s; locking the console", self.path)
            now = self.clock()
            return LockoutState(self.failures_to_lock, now + self.lockout_s, now)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(asdict(self.state)).encode() + b"\n", mode=0o600)

    def remaining_s(self) -> float:
        """Seconds before the next login may be tried (0: now).

        Never more than the lock last imposed, so a clock set back (`time set`) cannot
        stretch a lockout into days.
        """
        left = self.state.locked_until - self.clock()
        if self.state.failures:
            left = min(left, self.wait_after(self.state.failures))
        return max(0.0, left)

    @property
    def failures(self) -> int:
        return self.state.failures

    def failed(self) -> float:
        """Count a failed login; returns the wait it imposes."""
        now = self.clock()
        if self.state.failures and now - self.state.last_failure > FORGET_FAILURES_AFTER_S:
            self.state.failures = 0
        self.state.failures += 1
        self.state.last_failure = now
        wait = self.wait_after(self.state.failures)
        self.state.locked_until = now + wait
        self._save()
        return wait

    def wait_after(self, failures: int) -> float:
        if failures < self.failures_to_lock:
            return float(2 ** failures)
        return min(MAX_LOCK_S, self.lockout_s * 2 ** (failures - self.failures_to_lock))

    def succeeded(self) -> None:
        if self.state.failures or self.state.locked_until:
            self.state = LockoutState()
            self._save()
