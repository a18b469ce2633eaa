"""A full (or failing) disk under the state dir, reported as one condition instead of one
error per write.

Why: with the disk full every read the unit sees fails to be stored, and every sent message
fails to be deleted, so logging each failure wrote about 2,000 lines a minute (two
tracebacks per read) about one fact. `DiskCondition` logs one WARNING when the outbox's
writes start failing and one when a write that stores new data succeeds again, and keeps
counters the heartbeat carries. Callers that catch a write error while `active` log it at
DEBUG only. The start line says "disk full" when the error says so (ENOSPC, EDQUOT, EFBIG,
SQLITE_FULL); SQLite reports some of these, e.g. EFBIG from a file-size limit, only as
"disk I/O error", so any failed write starts the same condition.
"""
from __future__ import annotations

import errno
import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def is_no_space(exc: BaseException | None) -> bool:
    """True if `exc` or an exception it was raised from is a lack of space: ENOSPC, EDQUOT,
    EFBIG (a file-size limit) or SQLite's SQLITE_FULL ("database or disk is full")."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
            return True
        if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", None) == 13
                                               or "disk is full" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class DiskCondition:
    """Tracks one full-disk episode at a time for the files under `path`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.active = False
        self.episodes = 0          # times the condition started
        self.failed_writes = 0     # writes refused for lack of space, over the process's life
        self._lock = threading.Lock()

    def failed(self, exc: BaseException, what: str) -> None:
        """Count a failed write; the first of an episode is logged here, the rest are not."""
        with self._lock:
            self.failed_writes += 1
            starting = not self.active
            self.active = True
            if starting:
                self.episodes += 1
        if starting:
            log.warning("ALARM disk %s path=%s what=%s error=%s; non-hit reads are refused (audited), "
                        "hits are kept in memory and retried, sent messages stay queued until writes "
                        "succeed again", "full" if is_no_space(exc) else "write failing", self.path,
                        what, _root_message(exc))

    def recovered(self, what: str) -> None:
        """A write that stores new data succeeded: the episode, if any, is over."""
        with self._lock:
            ending, self.active = self.active, False
            failed = self.failed_writes
        if ending:
            log.warning("disk writable again path=%s what=%s failed_writes_total=%d", self.path, what,
                        failed)

    def stats(self) -> dict:
        return {"full": self.active, "episodes": self.episodes, "failed_writes": self.failed_writes}


def _root_message(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"
