"""Append-only, hash-chained audit log with signed checkpoints.

File format: one JSON object per line (UTF-8, ASCII-escaped)::

    {"seq":1,"time":1764019200.123,"event":"decision","fields":{...},"prev":"<64 hex>","hash":"<64 hex>"}

``hash`` is SHA-256 over the exact bytes of the line without its ``,"hash":"…"`` suffix (i.e.
``{"seq":…,"prev":"…"}``), so verification never depends on re-serialising JSON the same way.
``prev`` is the previous record's hash (64 zeros for seq 1): editing, deleting or reordering a
record breaks the chain at that record.

Every ``checkpoint_every`` records (and at close) a ``checkpoint`` record carries an Ed25519
signature by the unit key over ``plategate.audit.checkpoint/1\\n<seq>\\n<prev>``. A sidecar
``<log>.head`` file, rewritten atomically by ``flush()`` (at most once per ``seal_interval_s``)
and at close, holds the seq and hash of the last sealed record (signed when the unit has a key): cutting records off the end of the log
then shows as a log shorter than its head. Limits are in docs/audit.md.

Speed: ``record()`` only appends to an in-memory list under a lock; records are hashed and
written in batches, and ``flush()`` (called by the outbox before it commits) makes them durable.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.atomic import write_atomic
from agent import events
from agent.policy.signing import key_id as _key_id

log = logging.getLogger(__name__)

GENESIS = "0" * 64
_HASH_SUFFIX = re.compile(rb',"hash":"([0-9a-f]{64})"\}$')
_CHECKPOINT_MSG = b"plategate.audit.checkpoint/1\n%d\n%s"
_HEAD_MSG = b"plategate.audit.head/1\n%d\n%s"


class AuditError(RuntimeError):
    """The audit log cannot be written or continued; callers must stop sharing (fail closed)."""


def head_path(path: Path) -> Path:
    return Path(str(path) + ".head")


def _json_default(value: object) -> object:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


# One encoder for every record: json.dumps() with options builds a new JSONEncoder per call,
# which was a fifth of the cost of a small record.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, default=_json_default)


# Stands in for a JSONFragment while the record is encoded; random per process, so no field
# value can be mistaken for it.
_FRAGMENT_MARK = "\x00plategate-fragment-%s-" % os.urandom(8).hex()


class JSONFragment:
    """A field value encoded once and written as it is into every record that carries it.

    For values repeated across many records (the outbox's per-read decision lists are the
    same for every read a policy treats alike): encoding them again for each record was
    the largest part of its cost. Made only from a value, with the log's own encoder, so
    the record stays valid JSON and reads back as that value.
    """

    __slots__ = ("text",)

    def __init__(self, value: object) -> None:
        self.text = _ENCODER.encode(value)

    def __repr__(self) -> str:
        return f"JSONFragment({self.text})"


def _encode(seq: int, t: float, event: str, fields: dict, prev: str) -> tuple[bytes, str]:
    fragments = [(k, v) for k, v in fields.items() if type(v) is JSONFragment]
    if fragments:
        fields = dict(fields)
        for i, (key, _value) in enumerate(fragments):
            fields[key] = f"{_FRAGMENT_MARK}{i}"
    text = _ENCODER.encode({"seq": seq, "time": t, "event": event, "fields": fields,
                            "prev": prev})
    for i, (_key, value) in enumerate(fragments):
        text = text.replace(_ENCODER.encode(f"{_FRAGMENT_MARK}{i}"), value.text, 1)
    body = text.encode("ascii")
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + b',"hash":"' + digest.encode("ascii") + b'"}\n', digest


def _read_tail(path: Path) -> tuple[bytes | None, int]:
    """(last complete line or None, offset just after it)."""
    size = path.stat().st_size
    if size == 0:
        return None, 0
    chunk = 65536
    with open(path, "rb") as fh:
        while True:
            start = max(0, size - chunk)
            fh.seek(start)
            data = fh.read(size - start)
            end = data.rfind(b"\n")
            if end == -1:
                if start == 0:
                    return None, 0
                chunk *= 4
                continue
            begin = data.rfind(b"\n", 0, end) + 1
            if begin == 0 and start > 0:
                chunk *= 4
                continue
            return data[begin:end + 1], start + end + 1


class AuditLog:
    """Thread-safe appender. ``record`` is cheap; ``flush`` makes everything so far durable."""

    def __init__(self, path: Path, signing_key: Ed25519PrivateKey | None = None,
                 checkpoint_every: int = 1000, *, clock: Callable[[], float] = time.time,
                 buffer_records: int = 1024, seal_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self._key = signing_key
        self._key_id = _key_id(signing_key.public_key()) if signing_key else None
        self._checkpoint_every = max(1, int(checkpoint_every))
        self._clock = clock
        self._buffer_records = max(1, buffer_records)
        self._lock = threading.Lock()
        self._pending: list[tuple[float, str, dict]] = []
        self._good_end: int | None = None   # set after a failed write: cut the file back to it
        self._unwritten = bytearray()       # chained lines a failed write left to write
        self._unwritten_records = 0
        self._closed = False
        self._dirty = False
        self._sealed_dirty = False  # records durable in the log but not yet in the head
        self._seal_interval_s = seal_interval_s
        self._last_seal = float("-inf")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.touch(mode=0o640)
        last, good_end = _read_tail(self.path)
        dropped = self.path.stat().st_size - good_end
        if last is None:
            self._seq, self._prev = 0, GENESIS
        else:
            try:
                rec = json.loads(last)
                self._seq, self._prev = int(rec["seq"]), str(rec["hash"])
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditError(f"{self.path}: last record is unreadable ({exc}); run "
                                 f"`plategate audit verify {self.path}` before continuing") from exc
        if dropped:
            # A partial line after the last newline: a write cut by power loss. It was never
            # flushed as durable, so cutting it loses nothing that was acknowledged.
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
        self._file_seq = self._seq
        self._since_checkpoint = 0
        # Unbuffered: each batch goes to the kernel in whole records (one write per batch), so a
        # killed process never leaves half a record behind; only power loss can.
        self._fh = open(self.path, "ab", buffering=0)
        # Why the log found at start cannot be trusted to be whole, or None. The policy store
        # reads its rollback floor from the log and refuses a persisted bundle when this is set.
        self.tampering: str | None = None
        self._check_head(dropped)

    def _suspect(self, detail: str, head_seq: int | None, *, record: bool = True) -> None:
        self.tampering = detail
        if record:
            self.record(events.AUDIT_TRUNCATION_DETECTED, head_seq=head_seq, log_seq=self._seq,
                        detail=detail)

    def _check_head(self, dropped: int) -> None:
        hp = head_path(self.path)
        if dropped:
            log.warning("audit partial record cut path=%s dropped_bytes=%d", self.path, dropped)
            self.record(events.AUDIT_RECOVERED, dropped_bytes=dropped)
        if not hp.exists():
            if not self._seq:
                # A new log: seal "nothing yet" so a later missing head means tampering.
                write_atomic(hp, json.dumps({"seq": 0, "hash": GENESIS, "key_id": self._key_id,
                                              "signature": None, "time": None}).encode() + b"\n")
            if self._seq:
                log.error("audit head file missing path=%s log_seq=%d", hp, self._seq)
                self._suspect("head file missing", None)
            return
        try:
            head = json.loads(hp.read_bytes())
            head_seq, head_hash = int(head["seq"]), str(head["hash"])
        except (OSError, ValueError, KeyError, TypeError):
            log.error("audit head file unreadable path=%s", hp)
            self._suspect("head file unreadable", None)
            return
        if head_seq > self._seq or (head_seq == self._seq and head_hash != self._prev):
            log.error("audit log shorter than its head path=%s head_seq=%d log_seq=%d",
                      self.path, head_seq, self._seq)
            self._suspect("log ends before its sealed head", head_seq)
            return
        if self._key is not None and head_seq:
            # A head not signed by this unit's key could have been written by whoever cut the
            # log back to it. One that names this key but does not verify is recorded as
            # tampering. One that is unsigned or names another key (the unit ran without a
            # key, or its key was replaced) is not recorded, since that is also what adding
            # or rotating a unit key looks like, but the log is not trusted for the policy
            # rollback floor at this start (docs/policy.md).
            if head.get("key_id") != self._key_id:
                log.warning("audit head not signed by the unit key path=%s head_seq=%d head_key_id=%s",
                            hp, head_seq, head.get("key_id"))
                self._suspect("head not signed by the unit key", head_seq, record=False)
            elif not _sig_ok(self._key.public_key(), head.get("signature"),
                             _HEAD_MSG % (head_seq, head_hash.encode("ascii"))):
                log.error("audit head signature does not verify path=%s head_seq=%d", hp, head_seq)
                self._suspect("head signature does not verify with the unit key", head_seq)

    # --- writing ------------------------------------------------------------------------

    def record(self, event: str, **fields: object) -> None:
        """Append one record (buffered). Never put plate text, images or secrets in fields."""
        t = self._clock()
        with self._lock:
            if self._closed:
                raise AuditError(f"{self.path}: audit log is closed (event={event})")
            self._pending.append((t, event, fields))
            if len(self._pending) >= self._buffer_records:
                try:
                    self._write_pending()
                except AuditError as exc:
                    # The records stay pending (see _write_pending); flush() reports the
                    # failure to whoever is about to rely on them being durable.
                    log.error("audit write failed; records kept pending path=%s pending=%d "
                              "error=%s", self.path, len(self._pending), exc)

    def _append(self, t: float, event: str, fields: dict) -> bytes:
        self._seq += 1
        line, digest = _encode(self._seq, round(t, 6), event, fields, self._prev)
        self._prev = digest
        return line

    def _checkpoint_line(self, t: float) -> bytes:
        seq = self._seq + 1
        sig = self._key.sign(_CHECKPOINT_MSG % (seq, self._prev.encode("ascii")))
        self._since_checkpoint = 0
        return self._append(t, events.CHECKPOINT, {
            "count": seq, "head": self._prev, "key_id": self._key_id,
            "signature": base64.b64encode(sig).decode("ascii")})

    def _write_pending(self, *, final_checkpoint: bool = False) -> None:
        """Hash the pending records into the chain and append them in one write.

        All or nothing: if the write fails (disk full, EFBIG from a file-size limit, I/O
        error), whatever part of it reached the file is cut off again and the records stay
        in memory, already chained (`_unwritten`), so the next attempt writes exactly the
        same lines followed by the newer ones: no gap, no record hashed twice (a unit whose
        disk stays full does not spend ever more CPU re-hashing a growing backlog), and the
        caller, told by AuditError, acknowledges nothing that relied on them.
        """
        if self._pending or final_checkpoint:
            out = self._unwritten
            for t, event, fields in self._pending:
                out += self._append(t, event, fields)
                self._since_checkpoint += 1
                if self._key is not None and self._since_checkpoint >= self._checkpoint_every:
                    out += self._checkpoint_line(t)
            if final_checkpoint and self._key is not None and self._since_checkpoint:
                out += self._checkpoint_line(self._clock())
            self._unwritten_records += len(self._pending)
            self._pending.clear()
        if not self._unwritten:
            return
        if self._good_end is not None:
            self._repair()
        try:
            start = os.fstat(self._fh.fileno()).st_size
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot append audit records ({exc})") from exc
        try:
            data = memoryview(self._unwritten)
            try:
                while data:
                    written = self._fh.write(data)
                    if not written:
                        raise OSError(errno.ENOSPC, "no bytes written")
                    data = data[written:]
            finally:
                data.release()          # the buffer may grow again only once released
        except OSError as exc:
            self._good_end = start
            self._repair()
            raise AuditError(f"{self.path}: cannot append audit records ({exc}); "
                             f"{self._unwritten_records} record(s) kept pending") from exc
        self._unwritten.clear()
        self._unwritten_records = 0
        self._file_seq = self._seq
        self._dirty = True

    def _repair(self) -> None:
        """Cut a failed write's partial bytes off the end of the file (shrinking a file works
        on a full disk and under a size limit). If even that fails, it is tried again before
        the next write, which is refused until then."""
        try:
            os.ftruncate(self._fh.fileno(), self._good_end)
        except OSError as exc:
            log.error("audit log cannot cut a failed write path=%s offset=%d error=%s",
                      self.path, self._good_end, exc)
            raise AuditError(f"{self.path}: cannot cut a failed write back to byte "
                             f"{self._good_end} ({exc})") from exc
        self._good_end = None

    def flush(self) -> None:
        """Write and fdatasync everything recorded so far (the outbox calls this before it
        commits a batch); reseal the head file if ``seal_interval_s`` has passed."""
        with self._lock:
            if self._closed:
                return
            self._flush_locked()

    def _flush_locked(self, *, final_checkpoint: bool = False) -> None:
        self._write_pending(final_checkpoint=final_checkpoint)
        try:
            if self._dirty:
                os.fdatasync(self._fh.fileno())
                self._dirty = False
                self._sealed_dirty = True
            # Resealing the head costs a second fsync and a rename, so it happens at most once
            # per seal_interval_s (and always at close): records durable but not yet sealed are
            # the "unsealed tail" verify warns about (docs/audit.md, limits).
            now = time.monotonic()
            if self._sealed_dirty and (final_checkpoint or now - self._last_seal >= self._seal_interval_s):
                self._seal()
                self._last_seal = now
                self._sealed_dirty = False
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot make audit records durable ({exc})") from exc

    def _seal(self) -> None:
        head = {"seq": self._seq, "hash": self._prev, "time": round(self._clock(), 6),
                "key_id": self._key_id, "signature": None}
        if self._key is not None:
            sig = self._key.sign(_HEAD_MSG % (self._seq, self._prev.encode("ascii")))
            head["signature"] = base64.b64encode(sig).decode("ascii")
        write_atomic(head_path(self.path), json.dumps(head, sort_keys=True).encode() + b"\n")

    def close(self) -> None:
        """Flush, add a final signed checkpoint, and stop accepting records."""
        with self._lock:
            if self._closed:
                return
            self._flush_locked(final_checkpoint=True)
            self._closed = True
            self._fh.close()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def unwritten(self) -> int:
        """Records recorded but not yet in the file (a full disk keeps them in memory)."""
        with self._lock:
            return len(self._pending) + self._unwritten_records

    @property
    def seq(self) -> int:
        """Seq of the last record written to the file (pending records not counted)."""
        return self._file_seq


# --- verification ---------------------------------------------------------------------------

@dataclass
class VerifyResult:
    ok: bool
    records: int                        # complete records read
    problem: str = ""                   # the first problem, as a sentence naming the record
    first_bad_seq: int | None = None    # seq of the first bad (or first missing) record
    first_bad_line: int | None = None   # 1-based line number in the file, where known
    checkpoints: int = 0
    signed_checkpoints_verified: int = 0
    last_verified_seq: int = 0          # last seq covered by a verified signature (0 = none)
    warnings: list[str] = field(default_factory=list)


def _fail(result: VerifyResult, problem: str, seq: int | None, line: int | None) -> VerifyResult:
    result.ok = False
    result.problem = problem
    result.first_bad_seq = seq
    result.first_bad_line = line
    return result


def _sig_ok(public_key: Ed25519PublicKey, signature: object, message: bytes) -> bool:
    try:
        public_key.verify(base64.b64decode(str(signature), validate=True), message)
        return True
    except (InvalidSignature, ValueError):
        return False


def verify_log(path: Path, public_key: Ed25519PublicKey | None = None) -> VerifyResult:
    """Walk the chain; return ok or the first bad record (edited, deleted, reordered, truncated).

    With ``public_key`` (the unit's), checkpoint and head signatures are checked too, which is
    what catches a forger who rewrites the whole chain and its head without the unit key.
    """
    path = Path(path)
    result = VerifyResult(ok=True, records=0)
    want_kid = _key_id(public_key) if public_key is not None else None
    prev, expected = GENESIS, 1
    hp = head_path(path)
    head: dict | None = None
    head_seq, head_hash = 0, GENESIS
    if hp.exists():
        try:
            head = json.loads(hp.read_bytes())
            head_seq, head_hash = int(head["seq"]), str(head["hash"])
        except (OSError, ValueError, KeyError, TypeError):
            return _fail(result, f"head file {hp} is unreadable", None, None)
    hash_at_head: str | None = GENESIS if head_seq == 0 else None
    try:
        fh = open(path, "rb")
    except OSError as exc:
        return _fail(result, f"cannot open {path}: {exc}", None, None)
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                return _fail(result, f"line {lineno}: record seq {expected} is cut short (truncated "
                                     f"mid-record)", expected, lineno)
            raw = line[:-1]
            m = _HASH_SUFFIX.search(raw)
            try:
                rec = json.loads(raw)
                seq, event, rprev = rec["seq"], rec["event"], rec["prev"]
                fields = rec["fields"]
            except (ValueError, KeyError, TypeError):
                return _fail(result, f"line {lineno}: record seq {expected} is not a valid audit record "
                                     f"(edited)", expected, lineno)
            if m is None or not isinstance(seq, int) or not isinstance(fields, dict):
                return _fail(result, f"line {lineno}: record seq {expected} has a malformed hash or "
                                     f"fields (edited)", expected, lineno)
            digest = hashlib.sha256(raw[:m.start()] + b"}").hexdigest()
            if digest != m.group(1).decode():
                return _fail(result, f"line {lineno}: record seq {seq} was edited (its hash does not "
                                     f"match its content)", seq, lineno)
            if seq != expected:
                if seq > expected:
                    what = (f"record seq {expected} is missing (deleted or reordered); found seq {seq} "
                            f"in its place")
                else:
                    what = f"record seq {seq} is out of order (reordered or duplicated); expected seq {expected}"
                return _fail(result, f"line {lineno}: {what}", expected, lineno)
            if rprev != prev:
                return _fail(result, f"line {lineno}: record seq {seq} does not chain to record "
                                     f"seq {seq - 1} (prev hash mismatch: inserted or replaced)", seq, lineno)
            if event == events.CHECKPOINT:
                result.checkpoints += 1
                if fields.get("head") != prev or fields.get("count") != seq:
                    return _fail(result, f"line {lineno}: checkpoint seq {seq} does not describe the "
                                         f"chain before it", seq, lineno)
                if public_key is not None:
                    if fields.get("key_id") != want_kid or not _sig_ok(
                            public_key, fields.get("signature"), _CHECKPOINT_MSG % (seq, prev.encode())):
                        return _fail(result, f"line {lineno}: checkpoint seq {seq} signature does not verify "
                                             f"with unit key {want_kid}", seq, lineno)
                    result.signed_checkpoints_verified += 1
                    result.last_verified_seq = seq
            elif event == events.AUDIT_TRUNCATION_DETECTED:
                return _fail(result, f"line {lineno}: record seq {seq}: the unit found its log truncated "
                                     f"when it restarted (head seq {fields.get('head_seq')}, log ended at "
                                     f"seq {fields.get('log_seq')}: {fields.get('detail')})",
                             seq, lineno)
            prev = m.group(1).decode()
            if seq == head_seq:
                hash_at_head = prev
            expected = seq + 1
            result.records += 1

    last_seq = expected - 1
    if head is None:
        if last_seq:
            return _fail(result, f"head file {hp} is missing, so truncation cannot be ruled out; "
                                 f"the log ends at seq {last_seq}", last_seq + 1, None)
        return result
    if head_seq > last_seq:
        return _fail(result, f"log truncated: it ends at seq {last_seq} but its head says seq {head_seq}; "
                             f"records seq {last_seq + 1}..{head_seq} are missing", last_seq + 1, None)
    if hash_at_head != head_hash:
        return _fail(result, f"record seq {head_seq} differs from the sealed head (rewritten)", head_seq, None)
    if public_key is not None and head_seq:
        if head.get("key_id") != want_kid or not _sig_ok(public_key, head.get("signature"),
                                                         _HEAD_MSG % (head_seq, head_hash.encode())):
            return _fail(result, f"head file signature does not verify with unit key {want_kid}", head_seq, None)
        result.last_verified_seq = max(result.last_verified_seq, head_seq)
    if last_seq > head_seq:
        result.warnings.append(f"{last_seq - head_seq} record(s) after seq {head_seq} were written after "
                               f"the last seal (unit stopped before its next flush); they are chained but "
                               f"their absence could not have been detected")
    if public_key is None:
        result.warnings.append("no unit public key given: signatures were not checked, so a forger who "
                               "rewrote the whole chain and head would not be detected")
    return result
