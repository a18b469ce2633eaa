"""Where a department's receiver keeps reads: SQLite by default, PostgreSQL by DSN.

One schema for both, created on first use and carried forward by numbered migrations
(`schema_migrations` records which ran; PostgreSQL takes an advisory lock so receivers
starting together do not race). Reads are inserted in batches in one transaction with
``ON CONFLICT DO NOTHING`` on (read_id, destination): delivery is at least once, and a
duplicate is counted, never stored twice. The caller acknowledges a batch to the broker
only after `commit_batch()` returned, so a read the broker forgot is always on disk.

A field a destination was not sent is NULL, never an empty string: `row_to_read()` gives
back exactly the fields the message carried. Times: `seen_at` is the read's own ISO 8601
UTC timestamp (text, sortable; NULL when the destination does not get it), `received_at`
unix seconds at the receiver.

The unit registry (`units`) lives in the same database, so every receiver of a
department sees one registry; `registry_version` changes with every add or revoke and
receivers re-load the registry when it does (checked before each batch).
"""
from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.policy.signing import key_id as compute_key_id
from agent.provenance.keys import raw_public
from agent.provenance.messages import UnitKey, VerifiedRead

log = logging.getLogger(__name__)

# Columns of `reads`, in insert order. The read's own fields map onto them in row_from_read.
READ_COLUMNS = ("read_id", "destination", "unit_id", "key_id", "purpose", "policy_version",
                "sealed", "received_at", "seen_at", "plate", "plate_hmac", "confidence",
                "camera_id", "latitude", "longitude", "precision_m", "plate_crop",
                "vehicle_image", "hits")

# Each migration: a list of statements; {real} {blob} {bool} {serial} are filled per dialect.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (   # 1: reads, registry, counters, samples, health
        """CREATE TABLE reads (
            read_id TEXT NOT NULL, destination TEXT NOT NULL, unit_id TEXT NOT NULL,
            key_id TEXT NOT NULL, purpose TEXT NOT NULL, policy_version INTEGER NOT NULL,
            sealed {bool} NOT NULL, received_at {real} NOT NULL, seen_at TEXT,
            plate TEXT, plate_hmac TEXT, confidence {real}, camera_id TEXT,
            latitude {real}, longitude {real}, precision_m {real},
            plate_crop {blob}, vehicle_image {blob}, hits TEXT,
            PRIMARY KEY (read_id, destination))""",
        "CREATE INDEX reads_plate_seen ON reads (plate, seen_at)",
        "CREATE INDEX reads_plate_hmac_seen ON reads (plate_hmac, seen_at)",
        "CREATE INDEX reads_seen ON reads (seen_at)",
        "CREATE INDEX reads_unit_seen ON reads (unit_id, seen_at)",
        "CREATE INDEX reads_received ON reads (received_at)",
        """CREATE TABLE units (
            unit_id TEXT NOT NULL, key_id TEXT NOT NULL, public_key TEXT NOT NULL,
            added_at {real} NOT NULL, revoked_at {real}, note TEXT,
            PRIMARY KEY (unit_id, key_id))""",
        "CREATE TABLE registry_version (id INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
        "INSERT INTO registry_version (id, version) VALUES (1, 0)",
        "CREATE TABLE receive_counts (name TEXT PRIMARY KEY, count BIGINT NOT NULL)",
        """CREATE TABLE reject_samples (
            id {serial}, reason TEXT NOT NULL, detail TEXT NOT NULL, topic TEXT NOT NULL,
            received_at {real} NOT NULL, message {blob} NOT NULL)""",
        "CREATE INDEX reject_samples_reason ON reject_samples (reason)",
        """CREATE TABLE unit_health (
            unit_id TEXT PRIMARY KEY, status TEXT, status_at {real}, last_seen_at {real},
            last_heartbeat_at {real}, queue_depth BIGINT, policy_version INTEGER)""",
    ),
)

DIALECTS = {
    "sqlite": {"real": "REAL", "blob": "BLOB", "bool": "INTEGER",
               "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"real": "DOUBLE PRECISION", "blob": "BYTEA", "bool": "BOOLEAN",
                   "serial": "BIGSERIAL PRIMARY KEY"},
}
_PG_MIGRATION_LOCK = 0x504C4154_47415445 & 0x7FFFFFFFFFFFFFFF   # "PLATGATE"


class StoreError(RuntimeError):
    """The database cannot be used (unreachable, no driver, schema newer than this code)."""


@dataclass(frozen=True)
class RejectSample:
    reason: str
    detail: str
    topic: str
    received_at: float
    message: bytes


@dataclass(frozen=True)
class HealthUpdate:
    """What one status or heartbeat message (or a stored read) says about a unit."""

    unit_id: str
    at: float
    status: str | None = None            # online / offline / stopped (status topic)
    heartbeat: bool = False
    queue_depth: int | None = None
    policy_version: int | None = None


def row_from_read(read: VerifiedRead, received_at: float) -> tuple:
    """The `reads` row of a verified read: absent fields are None (NULL), never ''."""
    r = read.read
    loc = r.get("location")
    crop, vehicle, hits = r.get("plate_crop"), r.get("vehicle_image"), r.get("hits")
    return (read.read_id, read.destination, read.unit_id, read.key_id, read.purpose,
            read.policy_version, read.sealed, received_at, r.get("timestamp"), r.get("plate"),
            r.get("plate_hmac"), r.get("confidence"), r.get("camera_id"),
            loc["lat"] if loc else None, loc["lon"] if loc else None,
            loc["precision_m"] if loc else None,
            base64.b64decode(crop) if crop is not None else None,
            base64.b64decode(vehicle) if vehicle is not None else None,
            json.dumps(hits, separators=(",", ":")) if hits is not None else None)


def row_to_read(row: Mapping) -> dict:
    """The read fields of a stored row, exactly as the message carried them (NULL: absent)."""
    out: dict = {}
    for column, key in (("seen_at", "timestamp"), ("plate", "plate"), ("plate_hmac", "plate_hmac"),
                        ("confidence", "confidence"), ("camera_id", "camera_id")):
        if row[column] is not None:
            out[key] = row[column]
    if row["latitude"] is not None:
        out["location"] = {"lat": row["latitude"], "lon": row["longitude"],
                           "precision_m": row["precision_m"]}
    for column, key in (("plate_crop", "plate_crop"), ("vehicle_image", "vehicle_image")):
        if row[column] is not None:
            out[key] = base64.b64encode(bytes(row[column])).decode("ascii")
    if row["hits"] is not None:
        out["hits"] = json.loads(row["hits"])
    return out


def open_store(dsn: str | None, sqlite_path: Path | None) -> "Store":
    """PostgreSQL when `dsn` is given, else SQLite at `sqlite_path`; migrated to the latest schema."""
    store = PostgresStore(dsn) if dsn else SqliteStore(Path(sqlite_path or "reads.sqlite"))
    store.migrate()
    return store


class Store:
    """The operations a receiver and the `receive` commands need, over one DB-API connection."""

    dialect = "sqlite"
    conn: object

    def _sql(self, statement: str) -> str:
        return statement

    @contextmanager
    def _tx(self):
        raise NotImplementedError

    def close(self) -> None:
        self.conn.close()

    def recover(self) -> None:
        """After a failed operation: make the next one possible (a new connection where the
        old one broke). Raises StoreError while the database stays unreachable."""

    # --- schema ----------------------------------------------------------------------------

    def _lock_migrations(self, cur) -> None:
        """Hold off other receivers migrating at the same moment (PostgreSQL)."""

    def _tables(self, cur) -> set[str]:
        raise NotImplementedError

    def migrate(self) -> int:
        """Apply every migration not yet applied; return the schema version."""
        types = DIALECTS[self.dialect]
        with self._tx() as cur:
            self._lock_migrations(cur)
            if "schema_migrations" not in self._tables(cur):
                cur.execute(self._sql("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                                      f"applied_at {types['real']} NOT NULL)"))
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            current = int(cur.fetchone()[0])
            if current > len(MIGRATIONS):
                raise StoreError(f"database schema version {current} is newer than this receiver "
                                 f"knows ({len(MIGRATIONS)}); upgrade plategate")
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    cur.execute(statement.format(**types))
                cur.execute(self._sql("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)"),
                            (version, time.time()))
                log.info("receiver schema migrated to version=%d", version)
        return len(MIGRATIONS)

    # --- reads -----------------------------------------------------------------------------

    def commit_batch(self, rows: list[tuple], rejects: Iterable[RejectSample] = (),
                     counts: Mapping[str, int] | None = None, health: Iterable[HealthUpdate] = (),
                     samples_per_reason: int = 20) -> int:
        """Insert `rows` (duplicates dropped), samples, counters and health in ONE transaction.

        Returns how many rows were new. Only after this returns may the batch be acknowledged.
        """
        counts = dict(counts or {})
        placeholders = ", ".join("?" * len(READ_COLUMNS))
        insert = self._sql(f"INSERT INTO reads ({', '.join(READ_COLUMNS)}) VALUES ({placeholders}) "
                           "ON CONFLICT (read_id, destination) DO NOTHING")
        with self._tx() as cur:
            inserted = self._insert_reads(cur, insert, rows) if rows else 0
            if rows:
                counts["stored"] = counts.get("stored", 0) + inserted
                counts["duplicate"] = counts.get("duplicate", 0) + len(rows) - inserted
            for sample in rejects:
                if samples_per_reason > 0:
                    cur.execute(self._sql(
                        "INSERT INTO reject_samples (reason, detail, topic, received_at, message) "
                        "SELECT ?, ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM reject_samples "
                        "WHERE reason = ?) < ?"),
                        (sample.reason, sample.detail[:2000], sample.topic, sample.received_at,
                         sample.message[:65536], sample.reason, samples_per_reason))
            for name, count in sorted(counts.items()):
                if count:
                    cur.execute(self._sql(
                        "INSERT INTO receive_counts (name, count) VALUES (?, ?) ON CONFLICT (name) "
                        "DO UPDATE SET count = receive_counts.count + excluded.count"), (name, count))
            for update in health:
                self._upsert_health(cur, update)
        return inserted

    def _insert_reads(self, cur, insert: str, rows: list[tuple]) -> int:
        cur.executemany(insert, rows)
        return max(cur.rowcount, 0)

    def _upsert_health(self, cur, u: HealthUpdate) -> None:
        cur.execute(self._sql(
            "INSERT INTO unit_health (unit_id, status, status_at, last_seen_at, last_heartbeat_at, "
            "queue_depth, policy_version) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (unit_id) DO UPDATE SET "
            "status = COALESCE(excluded.status, unit_health.status), "
            "status_at = COALESCE(excluded.status_at, unit_health.status_at), "
            "last_seen_at = CASE WHEN excluded.last_seen_at IS NULL THEN unit_health.last_seen_at "
            "  WHEN unit_health.last_seen_at IS NULL OR excluded.last_seen_at > unit_health.last_seen_at "
            "  THEN excluded.last_seen_at ELSE unit_health.last_seen_at END, "
            "last_heartbeat_at = COALESCE(excluded.last_heartbeat_at, unit_health.last_heartbeat_at), "
            "queue_depth = COALESCE(excluded.queue_depth, unit_health.queue_depth), "
            "policy_version = COALESCE(excluded.policy_version, unit_health.policy_version)"),
            (u.unit_id, u.status, u.at if u.status else None,
             u.at if (u.status == "online" or u.heartbeat or u.status is None) else None,
             u.at if u.heartbeat else None, u.queue_depth, u.policy_version))

    def read_rows(self, since: float = 0.0, until: float | None = None) -> Iterator[dict]:
        """Stored reads received in [since, until), oldest first, as column -> value dicts."""
        query = f"SELECT {', '.join(READ_COLUMNS)} FROM reads WHERE received_at >= ?"
        params: list = [since]
        if until is not None:
            query += " AND received_at < ?"
            params.append(until)
        query += " ORDER BY received_at, read_id"
        cur = self._cursor()
        cur.execute(self._sql(query), params)
        while True:
            chunk = cur.fetchmany(1000)
            if not chunk:
                break
            for row in chunk:
                yield dict(zip(READ_COLUMNS, row))

    def read_ids(self) -> set[str]:
        cur = self._cursor()
        cur.execute("SELECT read_id FROM reads")
        return {row[0] for row in cur.fetchall()}

    def count_reads(self) -> int:
        cur = self._cursor()
        cur.execute("SELECT COUNT(*) FROM reads")
        return int(cur.fetchone()[0])

    def counts(self) -> dict[str, int]:
        cur = self._cursor()
        cur.execute("SELECT name, count FROM receive_counts")
        return {name: int(count) for name, count in cur.fetchall()}

    def samples(self, reason: str | None = None) -> list[RejectSample]:
        cur = self._cursor()
        query = "SELECT reason, detail, topic, received_at, message FROM reject_samples"
        params: tuple = ()
        if reason is not None:
            query += " WHERE reason = ?"
            params = (reason,)
        cur.execute(self._sql(query + " ORDER BY id"), params)
        return [RejectSample(r, d, t, float(a), bytes(m)) for r, d, t, a, m in cur.fetchall()]

    def health(self) -> list[dict]:
        cur = self._cursor()
        cur.execute("SELECT unit_id, status, status_at, last_seen_at, last_heartbeat_at, queue_depth, "
                    "policy_version FROM unit_health ORDER BY unit_id")
        names = ("unit_id", "status", "status_at", "last_seen_at", "last_heartbeat_at",
                 "queue_depth", "policy_version")
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def _cursor(self):
        return self.conn.cursor()

    # --- unit registry ---------------------------------------------------------------------

    def registry_version(self) -> int:
        cur = self._cursor()
        cur.execute("SELECT version FROM registry_version WHERE id = 1")
        return int(cur.fetchone()[0])

    def add_unit(self, unit_id: str, public_key: Ed25519PublicKey, note: str = "") -> str:
        """Register `public_key` for `unit_id`; returns its key id. Re-adding a revoked key is refused."""
        kid = compute_key_id(public_key)
        with self._tx() as cur:
            cur.execute(self._sql("SELECT revoked_at FROM units WHERE unit_id = ? AND key_id = ?"),
                        (unit_id, kid))
            found = cur.fetchone()
            if found is not None:
                if found[0] is not None:
                    raise StoreError(f"unit {unit_id!r} key {kid} was revoked; a revoked key is "
                                     f"never registered again (give the unit a new key)")
                return kid
            cur.execute(self._sql("INSERT INTO units (unit_id, key_id, public_key, added_at, note) "
                                  "VALUES (?, ?, ?, ?, ?)"),
                        (unit_id, kid, raw_public(public_key).hex(), time.time(), note))
            cur.execute("UPDATE registry_version SET version = version + 1 WHERE id = 1")
        return kid

    def revoke_unit(self, unit_id: str, key_id: str | None = None) -> int:
        """Revoke one key of a unit, or all of its keys; returns how many were revoked."""
        with self._tx() as cur:
            query = "UPDATE units SET revoked_at = ? WHERE unit_id = ? AND revoked_at IS NULL"
            params: tuple = (time.time(), unit_id)
            if key_id is not None:
                query += " AND key_id = ?"
                params += (key_id,)
            cur.execute(self._sql(query), params)
            changed = max(cur.rowcount, 0)
            if changed:
                cur.execute("UPDATE registry_version SET version = version + 1 WHERE id = 1")
        return changed

    def list_units(self) -> list[dict]:
        cur = self._cursor()
        cur.execute("SELECT unit_id, key_id, added_at, revoked_at, note FROM units "
                    "ORDER BY unit_id, added_at")
        names = ("unit_id", "key_id", "added_at", "revoked_at", "note")
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def unit_keys(self) -> dict[tuple[str, str], UnitKey]:
        """Every registered key (revoked ones marked), for open_message()."""
        cur = self._cursor()
        cur.execute("SELECT unit_id, key_id, public_key, revoked_at FROM units")
        out = {}
        for unit_id, kid, public_hex, revoked_at in cur.fetchall():
            public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
            out[(unit_id, kid)] = UnitKey(unit_id, kid, public_key, revoked=revoked_at is not None)
        return out


class SqliteStore(Store):
    """SQLite in WAL mode, synchronous=FULL: a committed batch survives a power cut."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0,
                                    check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=30000")

    @contextmanager
    def _tx(self):
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _tables(self, cur) -> set[str]:
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in cur.fetchall()}


class PostgresStore(Store):
    """PostgreSQL through psycopg 3 (the `receiver` extra); batches go out pipelined."""

    dialect = "postgresql"

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("storage.dsn is set but psycopg is not installed: "
                             "pip install 'plategate[receiver]'") from exc
        self.dsn = dsn
        self.conn = self._connect()

    def _connect(self):
        import psycopg
        try:
            return psycopg.connect(self.dsn, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}".strip()) from exc

    def recover(self) -> None:
        """A connection the server closed (restart, failover, terminated backend) is replaced."""
        if self.conn.closed or self.conn.broken:
            log.warning("PostgreSQL connection lost; reconnecting")
            self.conn = self._connect()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    @contextmanager
    def _tx(self):
        with self.conn.transaction():
            with self.conn.cursor() as cur:
                yield cur

    def _lock_migrations(self, cur) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))

    def _tables(self, cur) -> set[str]:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {row[0] for row in cur.fetchall()}
