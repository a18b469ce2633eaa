"""The durable outbox: one ordered queue per destination, in SQLite, that survives power cuts.

A read is "accepted" only when `accept()` returns: its decisions are in the audit log
(flushed) and its deliveries are committed in a WAL database with synchronous=FULL, so
a power cut after that point loses nothing and a cut before it loses only reads that
nobody was told were accepted.

The audit log and the outbox agree after any crash (issue 14 item 11): the audit is
flushed before each commit (no change on disk without its record), and each commit also
stores the audit seq it covers (`meta.audited_seq`). A crash between the flush and the
commit leaves `read.accepted` records past that seq for reads the outbox never stored;
`start()` finds them in the audit log's tail and records `read.lost` for them, naming
why, before anything else happens.

What is stored, and for how long:
- `reads`: the full read (needed to decide again at send time), kept while the read has
  a queued delivery or is *held* (accepted while no valid policy existed, waiting for
  one). Past retention it is deleted with its deliveries, and the deletion is audited.
- `deliveries`: the minimised payload per allowed destination, deleted after the
  broker's PUBACK, or purged (audited) when the policy no longer allows it.

- `journal`: reads the tracker has emitted but the accept stage has not accepted yet
  (`journal()`, one durable commit per emission), so a read that has left the tracker
  survives a crash before its acceptance; `accept()` deletes them in its own transaction
  and `start()` accepts what a crash left there.

The size on disk is bounded: when full, new non-hit reads are refused (OutboxFull, an
alarm) and hits make room by evicting the oldest non-hit reads (audited); a hit is
never dropped silently.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from agent import events
from agent.audit.log import AuditError, JSONFragment
from agent.audit.records import records_after
from agent.delivery.diskfull import DiskCondition
from agent.delivery.records import Delivery, decode_read, encode_read
from agent.policy.decision import (HotlistMatcher, Policy, ReadDecision, Retention, decide_read,
                                   valid_policy)
from agent.reads import ReadEvent

log = logging.getLogger(__name__)

# Bytes counted per row on top of its blobs (keys, indexes, page slack), so that the
# cap is in the right order of magnitude for small reads too.
ROW_OVERHEAD = 160
# Leave the "full" state only once below this share of max_bytes (no alarm flapping).
FULL_CLEAR_RATIO = 0.9
# When no policy was ever seen, held reads are kept this long (seconds).
READ_CACHE_SIZE = 4096
# Sent deliveries wait this long for a commit to ride on before settle_sent() makes one,
# and past SETTLE_MAX_S it waits for the outbox lock instead of trying again later.
SETTLE_S = 0.05
SETTLE_MAX_S = 0.25
DEFAULT_FALLBACK_RETENTION = Retention(nonhit_max_age_s=24 * 3600.0, hit_max_age_s=7 * 24 * 3600.0)

SCHEMA = """
CREATE TABLE IF NOT EXISTS reads (
    read_id     TEXT PRIMARY KEY,
    seen_at     REAL NOT NULL,
    accepted_at REAL NOT NULL,
    is_hit      INTEGER NOT NULL,
    held        INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    data        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS reads_seen ON reads(seen_at);
CREATE TABLE IF NOT EXISTS deliveries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    destination      TEXT NOT NULL,
    read_id          TEXT NOT NULL REFERENCES reads(read_id),
    policy_digest    TEXT NOT NULL,
    policy_version   INTEGER NOT NULL,
    transport_digest TEXT NOT NULL,
    purpose          TEXT NOT NULL,
    payload          BLOB NOT NULL,
    created_at       REAL NOT NULL,
    size             INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_dest ON deliveries(destination, seq);
CREATE INDEX IF NOT EXISTS deliveries_read ON deliveries(read_id);
CREATE TABLE IF NOT EXISTS journal (
    read_id TEXT PRIMARY KEY,
    data    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class PolicySource(Protocol):
    def active(self, now: float) -> Policy | None: ...
    def subscribe(self, callback: Callable[[Policy | None], None]) -> None: ...


class Audit(Protocol):
    def record(self, event: str, **fields: Any) -> None: ...
    def flush(self) -> None: ...


class OutboxError(RuntimeError):
    """The outbox could not store or change something; the message says what and where."""


class OutboxFull(OutboxError):
    """Some reads of a batch were refused because the outbox is at its size cap (or the disk
    is full). `refused` names them; `hits_refused` is true only when the disk itself failed,
    in which case the caller must keep those hits (`hit_ids`: the refused reads that are
    hotlist hits) and offer them again."""

    def __init__(self, message: str, refused: Sequence[str], hits_refused: bool,
                 hit_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.refused = tuple(refused)
        self.hits_refused = hits_refused
        self.hit_ids = frozenset(hit_ids)


class Outbox:
    """SQLite-backed per-destination queues; see the module docstring for the guarantees."""

    def __init__(self, path: Path, max_bytes: int, policy_store: PolicySource, audit: Audit,
                 hmac_keys: Mapping[str, bytes],
                 fallback_retention: Retention = DEFAULT_FALLBACK_RETENTION,
                 hotlists: HotlistMatcher | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.policy_store = policy_store
        self.audit = audit
        # What decide_read() needs besides the read, the policy and the time: the outbox
        # decides nothing itself (agent/policy/decision.py does), it stores the answers.
        self.hmac_keys = dict(hmac_keys)
        self.hotlists = hotlists
        self.fallback_retention = fallback_retention
        self._lock = threading.RLock()
        self._full = False
        self.disk = DiskCondition(self.path.parent)   # full-disk episodes: one WARNING each way
        self.refused_total = 0
        self.evicted_total = 0
        self.write_errors = 0
        # PUBACKed deliveries, audited as sent, deleted by the next commit after an audit
        # flush (see mark_sent); next_batch skips them meanwhile.
        self._pending_lock = threading.Lock()
        self._sent_pending: list[Delivery] = []
        self._sent_seqs: set[int] = set()
        self._sent_since = 0.0
        self._listeners: list[Callable[[set[str]], None]] = []
        self._touched: set[str] = set()
        self._conn = self._open()
        # A second connection for the senders' reads: in WAL mode it sees every committed
        # transaction without waiting for a writer's fsync.
        self._rlock = threading.Lock()
        self._rconn = sqlite3.connect(str(self.path), check_same_thread=False,
                                      isolation_level=None)
        # Decoded reads, so three destinations of one read decode it once (bounded, FIFO).
        self._cache: dict[str, ReadEvent] = {}
        self._cache_lock = threading.Lock()
        self._bytes = self._measure()
        self._started = False
        (self._journaled,) = self._conn.execute("SELECT COUNT(*) FROM journal").fetchone()

    def start(self) -> None:
        """Follow the policy store, and bring what survived on disk in line with the policy
        in force now (it may have changed while the unit was off, or none may be valid),
        before anything is sent. Called by Pipeline.start(), not by the constructor."""
        if self._started:
            return
        self._started = True
        self.reconcile()
        self.policy_store.subscribe(self._on_policy_change)
        now = _now()
        self.recheck(valid_policy(self.policy_store.active(now), now), now)
        self._accept_journaled(now)

    # --- the tracker's journal ----------------------------------------------------------

    def journal(self, reads: Sequence[ReadEvent]) -> None:
        """Make reads the tracker emitted durable before they leave it (one commit); the
        accept stage's accept() of them removes them again. Raises OutboxError."""
        if not reads:
            return
        rows = [(r.read_id, encode_read(r)) for r in reads]
        with self._lock:
            self._write(lambda conn: conn.executemany(
                "INSERT OR IGNORE INTO journal VALUES (?, ?)", rows), "journal")
            self._journaled += len(rows)

    def journaled(self) -> list[ReadEvent]:
        """Reads journaled and not accepted yet, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT data FROM journal ORDER BY rowid").fetchall()
        return [decode_read(r[0]) for r in rows]

    def _accept_journaled(self, now: float) -> None:
        pending = self.journaled()
        if not pending:
            return
        log.warning("accepting reads the tracker emitted before a stop count=%d path=%s",
                    len(pending), self.path)
        try:
            self.accept(pending, now)
        except OutboxFull as exc:
            log.error("journaled reads refused count=%d reason=%s", len(exc.refused), exc)

    def reconcile(self) -> list[str]:
        """Record `read.lost` for reads the audit log calls accepted (for a destination, or
        held) that no commit ever stored: the process died between the audit flush and the
        outbox commit. Returns their ids. Only the log's tail past `meta.audited_seq` is read."""
        path = getattr(self.audit, "path", None)
        if path is None or not Path(path).exists():
            return []
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key='audited_seq'").fetchone()
            if row is None:
                # An outbox that never recorded its audit seq (new, or made by a version
                # before this check): nothing tells which records its commits covered, and
                # reads delivered long ago are rightly absent. Start counting from here.
                self._write(lambda conn: None, "reconcile")
                return []
            after = int(row[0])
            expected: dict[str, int] = {}
            for record in records_after(Path(path), after):
                fields = record.get("fields") or {}
                if record.get("event") == events.READ_ACCEPTED and (
                        fields.get("held") or fields.get("destinations")):
                    expected[str(fields.get("read_id"))] = int(record["seq"])
                elif record.get("event") == events.READ_LOST:
                    for read_id in fields.get("read_ids") or ():
                        expected.pop(read_id, None)     # reconciled before (crash since)
                elif record.get("event") == events.OUTBOX_REFUSED:
                    expected.pop(str(fields.get("read_id")), None)  # its refusal is on record
            stored = self._existing(self._conn, list(expected))
            lost = [read_id for read_id in expected if read_id not in stored]
            if lost:
                log.error("reads audited as accepted but never committed count=%d path=%s; "
                          "recorded as lost", len(lost), self.path)
                self.audit.record(events.READ_LOST, read_ids=lost, count=len(lost),
                                  reason="the process stopped after the read.accepted record "
                                         "was written and before the outbox commit; the read "
                                         "was never stored and will not be delivered",
                                  audit_seqs=[expected[r] for r in lost])
            self._write(lambda conn: None, "reconcile")   # flushes, then moves audited_seq
            return lost

    def add_listener(self, callback: Callable[[set[str]], None]) -> None:
        """Call `callback(destination_ids)` after a commit queued something for them."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        touched, self._touched = self._touched, set()
        if not touched:
            return
        for callback in self._listeners:
            try:
                callback(touched)
            except Exception:
                log.exception("outbox listener failed")

    # --- storage ------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            # Deleted reads are overwritten with zeros, not just unlinked: retention means
            # "not kept, on disk included" (DESIGN.md invariant 7).
            conn.execute("PRAGMA secure_delete=ON")
            conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox database {self.path}: {exc}") from exc
        return conn

    def _measure(self) -> int:
        (reads,) = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM reads").fetchone()
        (dels,) = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM deliveries").fetchone()
        return int(reads) + int(dels)

    def close(self) -> None:
        try:
            self.settle_sent(force=True)
        except OutboxError:
            log.exception("could not delete sent deliveries at close; they will be sent again")
        with self._lock, self._rlock:
            self._rconn.close()
            self._conn.close()

    def _remember(self, read: ReadEvent) -> None:
        with self._cache_lock:
            self._cache[read.read_id] = read
            while len(self._cache) > READ_CACHE_SIZE:
                del self._cache[next(iter(self._cache))]

    def _cached_read(self, read_id: str, data: bytes) -> ReadEvent:
        with self._cache_lock:
            read = self._cache.get(read_id)
        if read is None:
            read = decode_read(data)
            self._remember(read)
        return read

    def integrity_check(self) -> str:
        with self._lock:
            return self._conn.execute("PRAGMA integrity_check").fetchone()[0]

    def _write(self, work: Callable[[sqlite3.Connection], None], what: str,
               durable: bool = True) -> None:
        """Run `work` in one transaction: flush the audit, then commit; roll back on error.

        The audit log is flushed before every commit, so no change is on disk without its
        audit record. durable=False (deletions after PUBACK only) skips the WAL fsync of
        the commit: a power cut can then undo the deletion, and the message is sent again
        (a duplicate, which at-least-once delivery allows, never a loss; its second
        delivery.sent record says so). The next durable commit makes it permanent (the
        WAL is append-only and synced as a whole).
        """
        conn = self._conn
        if not durable:
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        settled: list[Delivery] = []
        try:
            work(conn)
            with self._pending_lock:     # taken before the flush, which then covers them
                settled, self._sent_pending = self._sent_pending, []
            self.audit.flush()
            self._apply_sent(conn, settled)
            seq = getattr(self.audit, "seq", None)
            if seq is not None:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('audited_seq', ?)", (str(seq),))
            conn.execute("COMMIT")
        except BaseException as exc:
            if settled:
                with self._pending_lock:
                    self._sent_pending = settled + self._sent_pending
            self._touched.clear()
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._bytes = self._measure_safely()
            if isinstance(exc, (sqlite3.Error, OSError, AuditError)):
                # Disk full, I/O error, or the audit log could not be made durable: nothing
                # of this transaction is acknowledged.
                self.write_errors += 1
                self.disk.failed(exc, what)
                raise OutboxError(f"outbox write failed ({what}) in {self.path}: {exc}") from exc
            raise
        finally:
            if not durable:
                conn.execute("PRAGMA synchronous=FULL")
        if settled:
            with self._pending_lock:
                self._sent_seqs.difference_update(d.seq for d in settled)
        if what == "accept":   # new data stored: space is back (a delete can succeed on a full disk)
            self.disk.recovered(what)
        self._notify()

    def _measure_safely(self) -> int:
        try:
            return self._measure()
        except sqlite3.Error:
            return self._bytes

    # --- accepting reads ----------------------------------------------------------------

    def accept(self, reads: Sequence[ReadEvent], now: float) -> None:
        """Decide, store and audit a batch; returns only once it is durable.

        Raises OutboxFull naming the refused reads when the cap (or the disk) refused some;
        the others of the batch are then stored all the same.
        """
        with self._lock:
            policy = valid_policy(self.policy_store.active(now), now)
            refused: list[str] = []

            def work(conn: sqlite3.Connection) -> None:
                existing = self._existing(conn, [r.read_id for r in reads])
                read_rows: list[tuple] = []
                delivery_rows: list[tuple] = []
                for read in reads:
                    if read.read_id in existing:
                        continue  # accepted before (a retry after a crash): idempotent
                    existing.add(read.read_id)
                    decided = decide_read(read, policy, self.hotlists, self.hmac_keys, now)
                    read = decided.read                  # with its hotlist hits
                    allowed = decided.allowed
                    keep = decided.keep                  # held, or queued for someone
                    data = encode_read(read) if keep else b""
                    read_size = len(data) + ROW_OVERHEAD if keep else 0
                    size = read_size + sum(len(p.payload) + ROW_OVERHEAD for p in allowed)
                    if size and self._bytes + size > self.max_bytes:
                        if not read.is_hit:
                            refused.append(read.read_id)
                            self.audit.record("outbox.refused", read_id=read.read_id,
                                              reason="full", bytes=self._bytes,
                                              max_bytes=self.max_bytes)
                            continue
                        self._evict_for(conn, size, now)
                    # One record per read carrying its per-destination decisions: a
                    # quarter of the hashing and encoding of one record per decision, and
                    # the report counts each entry as a decision (docs/audit.md).
                    self.audit.record("read.accepted", **decided.accepted_fields(),
                                      decisions=_decision_fragment(decided))
                    if not keep:
                        continue
                    read_rows.append((read.read_id, read.seen_at, now, int(read.is_hit),
                                      int(policy is None), read_size, data))
                    self._bytes += size
                    self._remember(read)
                    for plan in allowed:
                        self._touched.add(plan.destination.id)
                        delivery_rows.append(_delivery_row(plan, decided, now))
                conn.executemany("INSERT INTO reads VALUES (?,?,?,?,?,?,?)", read_rows)
                if self._journaled:
                    conn.executemany("DELETE FROM journal WHERE read_id=?",
                                     [(r.read_id,) for r in reads])
                conn.executemany(
                    "INSERT INTO deliveries (destination, read_id, policy_digest, policy_version,"
                    " transport_digest, purpose, payload, created_at, size)"
                    " VALUES (?,?,?,?,?,?,?,?,?)", delivery_rows)

            disk_was_full = self.disk.active   # its end is logged by the disk condition
            try:
                self._write(work, "accept")
                if self._journaled:
                    (self._journaled,) = self._conn.execute(
                        "SELECT COUNT(*) FROM journal").fetchone()
            except OutboxError as exc:
                self._raise_alarm(f"write failed: {exc}", now, logged=True)  # by self.disk
                ids = [r.read_id for r in reads]
                for read_id in ids:
                    self.audit.record("outbox.refused", read_id=read_id, reason="write_failed")
                self._flush_quietly()
                self.refused_total += len(ids)
                hit_ids = [r.read_id for r in reads
                           if decide_read(r, None, self.hotlists, {}, now).read.is_hit]
                raise OutboxFull(f"outbox could not store {len(ids)} reads: {exc}", ids,
                                 hits_refused=bool(hit_ids), hit_ids=hit_ids) from exc
            if refused:
                self.refused_total += len(refused)
                self._raise_alarm(f"refused {len(refused)} non-hit reads", now)
                raise OutboxFull(f"outbox {self.path} is full ({self._bytes} of {self.max_bytes} "
                                 f"bytes); refused {len(refused)} non-hit reads", refused,
                                 hits_refused=False)
            if self._full and self._bytes < self.max_bytes * FULL_CLEAR_RATIO:
                self._full = False
                if not disk_was_full:
                    log.warning("outbox below cap again path=%s bytes=%d max_bytes=%d",
                                self.path, self._bytes, self.max_bytes)

    @staticmethod
    def _existing(conn: sqlite3.Connection, read_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(read_ids), 500):
            chunk = read_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in conn.execute(
                f"SELECT read_id FROM reads WHERE read_id IN ({marks})", chunk))
        return found

    def _flush_quietly(self) -> None:
        try:
            self.audit.flush()
        except Exception as exc:  # the audit log reports its own failures
            if self.disk.active:
                log.debug("audit flush failed on a failing disk: %s", exc)
            else:
                log.exception("audit flush failed after an outbox write error")

    def _raise_alarm(self, why: str, now: float, logged: bool = False) -> None:
        """Audit (and log, unless the disk condition already did) the start of an episode."""
        if not self._full:
            self._full = True
            if not logged:
                log.error("ALARM outbox full path=%s bytes=%d max_bytes=%d why=%s",
                          self.path, self._bytes, self.max_bytes, why)
            self.audit.record("outbox.full", bytes=self._bytes, max_bytes=self.max_bytes,
                              reason=why)
            self._flush_quietly()

    def _audit_decisions(self, decided: ReadDecision) -> None:
        """One `decision` record per entry (held reads decided when a policy arrives)."""
        read, policy = decided.read, decided.policy
        for entry in decided.entries():
            self.audit.record("decision", read_id=read.read_id, hit=read.is_hit,
                              policy_version=policy.version if policy else None,
                              policy_digest=policy.digest if policy else None, **entry)

    def _insert_deliveries(self, conn: sqlite3.Connection, decided: ReadDecision,
                           now: float) -> None:
        for plan in decided.allowed:
            row = _delivery_row(plan, decided, now)
            self._touched.add(plan.destination.id)
            conn.execute(
                "INSERT INTO deliveries (destination, read_id, policy_digest, policy_version,"
                " transport_digest, purpose, payload, created_at, size) VALUES (?,?,?,?,?,?,?,?,?)",
                row)
            self._bytes += row[-1]

    def _drop_if_unneeded(self, conn: sqlite3.Connection, read_id: str) -> None:
        """Delete a read that is neither held nor queued for anyone: nothing left to do with it."""
        row = conn.execute(
            "SELECT size FROM reads WHERE read_id=? AND held=0 AND NOT EXISTS "
            "(SELECT 1 FROM deliveries WHERE deliveries.read_id=reads.read_id)",
            (read_id,)).fetchone()
        if row:
            conn.execute("DELETE FROM reads WHERE read_id=?", (read_id,))
            self._bytes -= row[0]

    def _delete_read(self, conn: sqlite3.Connection, read_id: str) -> None:
        (dsize,) = conn.execute("SELECT COALESCE(SUM(size),0) FROM deliveries WHERE read_id=?",
                                (read_id,)).fetchone()
        row = conn.execute("SELECT size FROM reads WHERE read_id=?", (read_id,)).fetchone()
        conn.execute("DELETE FROM deliveries WHERE read_id=?", (read_id,))
        conn.execute("DELETE FROM reads WHERE read_id=?", (read_id,))
        self._bytes -= int(dsize) + (row[0] if row else 0)

    def _evict_for(self, conn: sqlite3.Connection, needed: int, now: float) -> None:
        """Make room for a hit by deleting the oldest non-hit reads (each eviction audited)."""
        while self._bytes + needed > self.max_bytes:
            victims = conn.execute("SELECT read_id, seen_at FROM reads WHERE is_hit=0 "
                                   "ORDER BY seen_at LIMIT 64").fetchall()
            if not victims:
                log.error("ALARM outbox over cap with hits only path=%s bytes=%d max_bytes=%d; "
                          "storing the hit anyway", self.path, self._bytes, self.max_bytes)
                self._raise_alarm("only hits left; cap exceeded to keep a hit", now)
                return
            for read_id, seen_at in victims:
                dests = [r[0] for r in conn.execute(
                    "SELECT destination FROM deliveries WHERE read_id=?", (read_id,))]
                self._delete_read(conn, read_id)
                self.evicted_total += 1
                for dest_id in dests or [None]:
                    self.audit.record("outbox.evicted", read_id=read_id, destination=dest_id,
                                      reason="full; room for a hit", seen_at=seen_at)
                if self._bytes + needed <= self.max_bytes:
                    break

    # --- sending side (used by the delivery service and the gate) ------------------------

    def next_batch(self, destination_id: str, after_seq: int, limit: int) -> list[Delivery]:
        """The next queued deliveries of one destination, in order, after `after_seq`."""
        # The full reads are fetched only for those not in the decoded-read cache (the
        # destinations of a read are usually sent close together): copying every read's
        # blob out of SQLite for every destination cost more than the rest of the query.
        with self._rlock:
            conn = self._rconn
            conn.execute("BEGIN")        # one snapshot for both queries
            try:
                rows = conn.execute(
                    "SELECT seq, destination, read_id, policy_digest, policy_version,"
                    " transport_digest, purpose, payload, created_at FROM deliveries"
                    " WHERE destination=? AND seq>? ORDER BY seq LIMIT ?",
                    (destination_id, after_seq, limit)).fetchall()
                sent = self._sent_seqs
                rows = [r for r in rows if r[0] not in sent]
                with self._cache_lock:
                    reads = {r[2]: self._cache.get(r[2]) for r in rows}
                missing = [rid for rid, read in reads.items() if read is None]
                for start in range(0, len(missing), 500):
                    chunk = missing[start:start + 500]
                    for rid, data in conn.execute(
                            f"SELECT read_id, data FROM reads WHERE read_id IN "
                            f"({','.join('?' * len(chunk))})", chunk):
                        reads[rid] = self._cached_read(rid, data)
            finally:
                conn.execute("COMMIT")
        return [Delivery(seq=r[0], destination_id=r[1], read_id=r[2], policy_digest=r[3],
                         policy_version=r[4], transport_digest=r[5], purpose=r[6],
                         payload=bytes(r[7]), read=reads[r[2]], created_at=r[8])
                for r in rows if reads.get(r[2]) is not None]

    def mark_sent(self, deliveries: Sequence[Delivery], now: float) -> None:
        """Record deliveries the broker acknowledged (PUBACK): audited as delivery.sent now,
        deleted by the next commit, which flushes the audit log first.

        So a crash never leaves a delivery deleted without its delivery.sent record, and
        the deletes ride on the commits accept() makes anyway instead of costing an audit
        flush each; `settle_sent()` commits them when no accept comes along. They are not
        fsynced (see _write): a power cut that undoes one means a duplicate, not a loss.
        """
        if not deliveries:
            return
        # One record per PUBACK batch and destination, listing its reads in order (the
        # report counts each read_id as one delivery; docs/audit.md).
        by_dest: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_dest.setdefault(d.destination_id, []).append(d)
        for dest_id, batch in by_dest.items():
            self.audit.record("delivery.sent", destination=dest_id, count=len(batch),
                              read_ids=[d.read_id for d in batch],
                              seqs=[d.seq for d in batch],
                              purposes=[d.purpose for d in batch],
                              policy_versions=[d.policy_version for d in batch])
        with self._pending_lock:
            if not self._sent_pending:
                self._sent_since = time.monotonic()
            self._sent_pending.extend(deliveries)
            self._sent_seqs.update(d.seq for d in deliveries)

    def settle_sent(self, force: bool = False) -> bool:
        """Delete what mark_sent() recorded, if it waited SETTLE_S (or `force`) and no other
        writer is busy (SETTLE_MAX_S: then wait for it). True when nothing is left pending."""
        with self._pending_lock:
            if not self._sent_pending:
                return True
            age = time.monotonic() - self._sent_since
        if not force and age < SETTLE_S:
            return False
        if not self._lock.acquire(blocking=force or age > SETTLE_MAX_S):
            return False
        try:
            self._write(lambda conn: None, "mark_sent", durable=False)
        finally:
            self._lock.release()
        return True

    def _apply_sent(self, conn: sqlite3.Connection, settled: Sequence[Delivery]) -> None:
        for start in range(0, len(settled), 500):
            chunk = settled[start:start + 500]
            seqs = [d.seq for d in chunk]
            marks = ",".join("?" * len(seqs))
            gone = conn.execute(f"DELETE FROM deliveries WHERE seq IN ({marks}) "
                                "RETURNING size", seqs).fetchall()
            self._bytes -= sum(r[0] for r in gone)
            ids = list(dict.fromkeys(d.read_id for d in chunk))
            marks = ",".join("?" * len(ids))
            freed = conn.execute(
                f"DELETE FROM reads WHERE read_id IN ({marks}) AND held=0 AND NOT EXISTS"
                " (SELECT 1 FROM deliveries WHERE deliveries.read_id=reads.read_id)"
                " RETURNING size", ids).fetchall()
            self._bytes -= sum(r[0] for r in freed)

    def purge_delivery(self, delivery: Delivery, reason: str, now: float) -> str:
        """Delete one delivery that may no longer be sent (audited as delivery.purged), but
        only the copy that was checked: returns "purged", "gone" (nothing queued under that
        seq any more) or "changed" (the queued row was re-minimised or re-bound since it was
        fetched, or was made under another policy than the active one, whose re-check is
        still to come; it stays, for the re-check and a fresh look by the gate)."""
        with self._lock:
            outcome = "gone"
            active = self.policy_store.active(now)

            def work(conn: sqlite3.Connection) -> None:
                nonlocal outcome
                row = conn.execute("SELECT policy_digest, transport_digest, payload FROM"
                                   " deliveries WHERE seq=?", (delivery.seq,)).fetchone()
                if row is None:
                    return
                if (row[0], row[1], bytes(row[2])) != (delivery.policy_digest,
                                                       delivery.transport_digest,
                                                       delivery.payload):
                    outcome = "changed"
                    return
                if active is not None and row[0] != active.digest:
                    # The policy store installs first and then tells the outbox, so a sender
                    # can see the new policy before the re-check has re-minimised this row.
                    outcome = "changed"
                    return
                self._purge_one(conn, delivery.seq, delivery.read_id, delivery.destination_id,
                                reason)
                outcome = "purged"
            self._write(work, "purge_delivery")
            return outcome

    def _purge_one(self, conn: sqlite3.Connection, seq: int, read_id: str, destination_id: str,
                   reason: str) -> None:
        row = conn.execute("SELECT size FROM deliveries WHERE seq=?", (seq,)).fetchone()
        if row is None:
            return
        conn.execute("DELETE FROM deliveries WHERE seq=?", (seq,))
        self._bytes -= row[0]
        self.audit.record("delivery.purged", read_id=read_id, destination=destination_id,
                          reason=reason, seq=seq)
        self._drop_if_unneeded(conn, read_id)

    # --- retention and policy changes ---------------------------------------------------

    def _retention(self, policy: Policy | None) -> Retention:
        if policy is not None:
            return policy.retention
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key='retention'").fetchone()
        if row:
            nonhit, hit = (float(x) for x in row[0].split(","))
            return Retention(nonhit_max_age_s=nonhit, hit_max_age_s=hit)
        return self.fallback_retention

    def purge_expired(self, now: float) -> int:
        """Delete reads past retention and deliveries past their rule's max age; audited.

        Returns how many reads and deliveries were deleted.
        """
        with self._lock:
            policy = self.policy_store.active(now)
            retention = self._retention(policy)
            deleted = 0

            def work(conn: sqlite3.Connection) -> None:
                nonlocal deleted
                expired = conn.execute(
                    "SELECT read_id, seen_at, is_hit FROM reads WHERE "
                    "(is_hit=0 AND seen_at < ?) OR (is_hit=1 AND seen_at < ?)",
                    (now - retention.nonhit_max_age_s, now - retention.hit_max_age_s)).fetchall()
                for read_id, _seen_at, _is_hit in expired:
                    self._delete_read(conn, read_id)
                    deleted += 1
                if expired:
                    self.audit.record("retention.deleted", where="outbox", count=len(expired),
                                      hits=sum(1 for r in expired if r[2]),
                                      oldest_age_s=round(now - min(r[1] for r in expired), 3),
                                      read_ids=[r[0] for r in expired])
                if policy is None:
                    return
                for dest in policy.destinations:
                    max_age = dest.rule.max_age_s
                    if max_age is None:
                        continue
                    rows = conn.execute(
                        "SELECT d.seq, d.read_id FROM deliveries d JOIN reads r"
                        " ON r.read_id=d.read_id WHERE d.destination=? AND r.seen_at < ?",
                        (dest.id, now - max_age)).fetchall()
                    for seq, read_id in rows:
                        self._purge_one(conn, seq, read_id, dest.id, "max_age")
                        deleted += 1

            self._write(work, "purge_expired")
            # Every round, not only when something expired here: reads deleted after their
            # PUBACK also leave old WAL frames behind until a checkpoint truncates it.
            self._truncate_wal()
            if deleted:
                log.info("retention purge deleted=%d path=%s", deleted, self.path)
            return deleted

    def _truncate_wal(self) -> None:
        """Checkpoint and truncate the WAL so old frames holding deleted reads leave the disk."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.log(logging.DEBUG if self.disk.active else logging.WARNING,
                    "wal checkpoint failed path=%s error=%s", self.path, exc)

    def _on_policy_change(self, policy: Policy | None) -> None:
        """Subscribed to the policy store: re-check the backlog against the new policy at once."""
        try:
            now = _now()
            self.recheck(valid_policy(policy, now), now=now)
        except Exception:  # never raise into the policy store's thread
            log.exception("outbox re-check after a policy change failed path=%s", self.path)

    def recheck(self, policy: Policy | None, now: float) -> None:
        """Bring every queued delivery and held read in line with `policy`.

        - No valid policy: queued deliveries are withdrawn and their reads held (fail
          closed, reads stay local within retention), audited as delivery.purged.
        - A policy: each queued delivery is decided again; no longer allowed -> purged;
          allowed under a new digest -> re-minimised under the new rule (so a narrowed
          rule narrows the backlog too). Held reads are decided and queued.
        """
        with self._lock:
            def work(conn: sqlite3.Connection) -> None:
                if policy is None:
                    self._hold_everything(conn)
                    return
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('retention', ?)",
                             (f"{policy.retention.nonhit_max_age_s},"
                              f"{policy.retention.hit_max_age_s}",))
                self._recheck_deliveries(conn, policy, now)
                self._decide_held(conn, policy, now)
            self._write(work, "recheck")
            self._truncate_wal()

    def _hold_everything(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT seq, read_id, destination FROM deliveries ORDER BY seq").fetchall()
        for seq, read_id, dest_id in rows:
            conn.execute("UPDATE reads SET held=1 WHERE read_id=?", (read_id,))
            self._purge_one(conn, seq, read_id, dest_id, "no_policy; read held")

    def _recheck_deliveries(self, conn: sqlite3.Connection, policy: Policy, now: float) -> None:
        rows = conn.execute(
            "SELECT d.seq, d.read_id, d.destination, d.policy_digest, d.transport_digest, r.data,"
            " d.size FROM deliveries d JOIN reads r ON r.read_id=d.read_id ORDER BY d.seq").fetchall()
        for seq, read_id, dest_id, digest, tdigest, data, old_size in rows:
            if digest == policy.digest:
                continue
            dest = policy.destination(dest_id)
            if dest is None:
                self._purge_one(conn, seq, read_id, dest_id, "destination removed by policy "
                                f"v{policy.version}")
                continue
            decided = decide_read(decode_read(data), policy, None, self.hmac_keys, now)
            read = decided.read
            (plan,) = [p for p in decided.plans if p.destination.id == dest_id]
            decision, payload = plan.decision, plan.payload
            self.audit.record("decision", read_id=read_id, destination=dest_id,
                              allowed=decision.allowed, rule_id=decision.rule_id,
                              reason=decision.reason, purposes=sorted(decision.purposes),
                              hit=read.is_hit, dest_class=dest.dest_class,
                              policy_version=policy.version, policy_digest=policy.digest,
                              fields=sorted(decision.fields), recheck=True)
            if not decision.allowed:
                self._purge_one(conn, seq, read_id, dest_id, f"policy v{policy.version}: "
                                f"{decision.reason}")
                continue
            new_size = len(payload) + ROW_OVERHEAD
            conn.execute("UPDATE deliveries SET policy_digest=?, policy_version=?,"
                         " transport_digest=?, purpose=?, payload=?, size=? WHERE seq=?",
                         (policy.digest, policy.version, plan.transport_digest, plan.purpose,
                          payload, new_size, seq))
            self._bytes += new_size - old_size

    def _decide_held(self, conn: sqlite3.Connection, policy: Policy, now: float) -> None:
        retention = policy.retention
        rows = conn.execute("SELECT read_id, data FROM reads WHERE held=1 ORDER BY seen_at").fetchall()
        for read_id, data in rows:
            read = decode_read(data)
            limit = retention.hit_max_age_s if read.is_hit else retention.nonhit_max_age_s
            if now - read.seen_at > limit:
                continue  # purge_expired deletes it (audited)
            decided = decide_read(read, policy, None, self.hmac_keys, now)
            self._audit_decisions(decided)
            conn.execute("UPDATE reads SET held=0 WHERE read_id=?", (read_id,))
            self._insert_deliveries(conn, decided, now)
            self._drop_if_unneeded(conn, read_id)

    # --- observation ----------------------------------------------------------------------

    def _pending_by_destination(self) -> dict[str, int]:
        with self._pending_lock:
            pending = list(self._sent_pending)
        counts: dict[str, int] = {}
        for d in pending:
            counts[d.destination_id] = counts.get(d.destination_id, 0) + 1
        return counts

    def depth(self, destination_id: str) -> int:
        """Deliveries queued for a destination (sent ones awaiting deletion not counted)."""
        with self._rlock:
            total = self._rconn.execute("SELECT COUNT(*) FROM deliveries WHERE destination=?",
                                        (destination_id,)).fetchone()[0]
        return max(0, total - self._pending_by_destination().get(destination_id, 0))

    def depths(self) -> dict[str, int]:
        with self._rlock:
            totals = dict(self._rconn.execute(
                "SELECT destination, COUNT(*) FROM deliveries GROUP BY destination").fetchall())
        pending = self._pending_by_destination()
        return {dest: max(0, n - pending.get(dest, 0)) for dest, n in totals.items()}

    def held_count(self) -> int:
        with self._rlock:
            return self._rconn.execute("SELECT COUNT(*) FROM reads WHERE held=1").fetchone()[0]

    def oldest_age(self, now: float) -> float | None:
        """Age in seconds of the oldest read still in the outbox (None when empty)."""
        with self._rlock:
            (oldest,) = self._rconn.execute("SELECT MIN(seen_at) FROM reads").fetchone()
        return None if oldest is None else max(0.0, now - oldest)

    def stats(self, now: float | None = None) -> dict:
        now = _now() if now is None else now
        return {
            "depth": self.depths(),
            "held": self.held_count(),
            "oldest_age_s": self.oldest_age(now),
            "bytes": self._bytes,
            "max_bytes": self.max_bytes,
            "full": self._full,
            "refused_total": self.refused_total,
            "evicted_total": self.evicted_total,
            "write_errors": self.write_errors,
        }

    def read_ids(self) -> set[str]:
        """Every read id still stored (tests and the soak runner)."""
        with self._rlock:
            return {r[0] for r in self._rconn.execute("SELECT read_id FROM reads")}


_ENTRIES_CACHE: dict[tuple, JSONFragment] = {}
_ENTRIES_CACHE_SIZE = 256


def _decision_fragment(decided: ReadDecision) -> JSONFragment:
    """The read's audit entries, encoded once per distinct outcome: every read a policy
    treats alike (e.g. all non-hits) has the same entries, so the audit log writes the
    cached encoding instead of encoding them again (see JSONFragment)."""
    key = decided.entries_key()
    fragment = _ENTRIES_CACHE.get(key)
    if fragment is None:
        fragment = JSONFragment(decided.entries())
        if len(_ENTRIES_CACHE) >= _ENTRIES_CACHE_SIZE:
            _ENTRIES_CACHE.clear()
        _ENTRIES_CACHE[key] = fragment
    return fragment


def _delivery_row(plan, decided: ReadDecision, now: float) -> tuple:
    """The `deliveries` row (without seq) of one allowed plan."""
    policy = decided.policy
    return (plan.destination.id, decided.read.read_id, policy.digest, policy.version,
            plan.transport_digest, plan.purpose, plan.payload, now,
            len(plan.payload) + ROW_OVERHEAD)


def _now() -> float:
    return time.time()
