"""Audit log: hash chain, signed checkpoints, head seal; every tamper is caught and named."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.audit.log import AuditError, AuditLog, head_path, verify_log
from agent.policy.signing import load_private_key

KEYS = Path(__file__).resolve().parents[1] / "firmware_config" / "policies" / "test-keys"


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


@pytest.fixture(scope="module")
def unit_key():
    return load_private_key(KEYS / "unit-TEST-ONLY.key")


def write_log(path: Path, n: int, key=None, checkpoint_every: int = 10) -> Path:
    log = AuditLog(path, key, checkpoint_every=checkpoint_every, clock=Clock())
    for i in range(n):
        log.record("decision", read_id=f"r{i}", destination="county-records", allowed=i % 3 != 0,
                   rule_id="county-all", reason="test", purposes=[], hit=False, dest_class="local_police")
        if i % 7 == 0:
            log.flush()
    log.close()
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_clean_log_verifies(tmp_path, unit_key) -> None:
    path = write_log(tmp_path / "a.jsonl", 35, unit_key)
    result = verify_log(path, unit_key.public_key())
    assert result.ok, result.problem
    assert result.records == 35 + 4  # 3 periodic checkpoints + 1 at close
    assert result.signed_checkpoints_verified == 4 and result.last_verified_seq == result.records
    rec = json.loads(lines(path)[0])
    assert set(rec) == {"seq", "time", "event", "fields", "prev", "hash"} and rec["prev"] == "0" * 64


def test_edit_is_detected_and_named(tmp_path) -> None:
    path = write_log(tmp_path / "a.jsonl", 20)
    data = lines(path)
    data[6] = data[6].replace(b'"read_id":"r6"', b'"read_id":"r9"')
    path.write_bytes(b"".join(data))
    result = verify_log(path)
    assert not result.ok and result.first_bad_seq == 7 and result.first_bad_line == 7
    assert "edited" in result.problem


def test_edit_with_recomputed_hash_breaks_the_next_link(tmp_path) -> None:
    import hashlib
    path = write_log(tmp_path / "a.jsonl", 20)
    data = lines(path)
    rec = json.loads(data[4])
    rec["fields"]["allowed"] = not rec["fields"]["allowed"]
    body = json.dumps({k: rec[k] for k in ("seq", "time", "event", "fields", "prev")},
                      separators=(",", ":")).encode()
    data[4] = body[:-1] + b',"hash":"' + hashlib.sha256(body).hexdigest().encode() + b'"}\n'
    path.write_bytes(b"".join(data))
    result = verify_log(path)
    assert not result.ok and result.first_bad_seq == 6 and "does not chain" in result.problem


def test_delete_is_detected_and_named(tmp_path) -> None:
    path = write_log(tmp_path / "a.jsonl", 20)
    data = lines(path)
    del data[9]
    path.write_bytes(b"".join(data))
    result = verify_log(path)
    assert not result.ok and result.first_bad_seq == 10 and "missing" in result.problem


def test_reorder_is_detected_and_named(tmp_path) -> None:
    path = write_log(tmp_path / "a.jsonl", 20)
    data = lines(path)
    data[3], data[4] = data[4], data[3]
    path.write_bytes(b"".join(data))
    result = verify_log(path)
    assert not result.ok and result.first_bad_seq == 4 and result.first_bad_line == 4


@pytest.mark.parametrize("keep", [0, 1, 5, 19])
def test_truncation_is_detected_and_named(tmp_path, keep) -> None:
    path = write_log(tmp_path / "a.jsonl", 20)
    path.write_bytes(b"".join(lines(path)[:keep]))
    result = verify_log(path)
    assert not result.ok and result.first_bad_seq == keep + 1
    assert "truncated" in result.problem


def test_truncation_mid_record(tmp_path) -> None:
    path = write_log(tmp_path / "a.jsonl", 20)
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    result = verify_log(path)
    assert not result.ok and result.first_bad_seq == 20 and "cut short" in result.problem


def test_deleting_the_head_is_detected(tmp_path) -> None:
    path = write_log(tmp_path / "a.jsonl", 5)
    head_path(path).unlink()
    result = verify_log(path)
    assert not result.ok and "head file" in result.problem


def test_forged_chain_caught_only_with_unit_key(tmp_path, unit_key) -> None:
    """A forger without the unit key rewrites the whole log and its head consistently."""
    real = write_log(tmp_path / "real.jsonl", 12, unit_key, checkpoint_every=5)
    forged = write_log(tmp_path / "forged.jsonl", 12, None)
    # keep the real checkpoints' shape: copy the forged log over the real one
    real.write_bytes(forged.read_bytes())
    head_path(real).write_bytes(head_path(forged).read_bytes())
    assert verify_log(real).ok  # integrity alone cannot tell
    result = verify_log(real, unit_key.public_key())
    assert not result.ok and "signature" in result.problem


def test_bad_checkpoint_signature(tmp_path, unit_key) -> None:
    path = write_log(tmp_path / "a.jsonl", 12, unit_key, checkpoint_every=5)
    other = load_private_key(KEYS / "vendor-TEST-ONLY.key")
    result = verify_log(path, other.public_key())
    assert not result.ok and result.first_bad_seq == 6 and "checkpoint" in result.problem


def test_reopen_continues_chain(tmp_path, unit_key) -> None:
    path = write_log(tmp_path / "a.jsonl", 8, unit_key)
    log = AuditLog(path, unit_key, clock=Clock())
    log.record("config.changed", key="mqtt.port")
    log.close()
    result = verify_log(path, unit_key.public_key())
    assert result.ok, result.problem
    assert json.loads(lines(path)[-2])["event"] == "config.changed"


def test_partial_line_after_crash_is_cut_and_recorded(tmp_path) -> None:
    path = write_log(tmp_path / "a.jsonl", 8)
    with open(path, "ab") as fh:
        fh.write(b'{"seq":10,"time":1,"ev')
    log = AuditLog(path)
    log.record("read.accepted", read_id="x")
    log.close()
    assert verify_log(path).ok
    events = [json.loads(x)["event"] for x in lines(path)]
    assert "audit.recovered" in events


def test_truncation_before_restart_stays_detected(tmp_path) -> None:
    """Bug pinned: appending after a truncation must not overwrite the evidence in the head."""
    path = write_log(tmp_path / "a.jsonl", 20)
    path.write_bytes(b"".join(lines(path)[:10]))
    log = AuditLog(path)
    for i in range(30):
        log.record("read.accepted", read_id=f"n{i}")
    log.close()
    result = verify_log(path)
    assert not result.ok and result.first_bad_seq == 11 and "truncated" in result.problem


def test_records_after_last_seal_are_a_warning_not_a_failure(tmp_path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, clock=Clock(), buffer_records=1)
    log.record("read.accepted", read_id="a")
    log.flush()
    log.record("read.accepted", read_id="b")  # written (buffer of 1) but never flushed
    result = verify_log(path)
    assert result.ok and any("after seq 1" in w for w in result.warnings)


def test_threads_record_concurrently(tmp_path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, buffer_records=64)

    def worker(n: int) -> None:
        for i in range(500):
            log.record("decision", read_id=f"{n}-{i}", allowed=True)
            if i % 100 == 0:
                log.flush()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    result = verify_log(path)
    assert result.ok and result.records == 2000


def test_closed_log_refuses_records(tmp_path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    log.close()
    with pytest.raises(AuditError):
        log.record("decision")


def test_non_json_values_are_recorded_safely(tmp_path) -> None:
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as log:
        log.record("decision", purposes=frozenset({"b", "a"}), fields=("x",), blob=b"\x01", obj=object())
    rec = json.loads(lines(path)[0])
    assert rec["fields"]["purposes"] == ["a", "b"] and rec["fields"]["blob"] == "01"


def test_head_is_resealed_at_most_once_per_interval_and_at_close(tmp_path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, clock=Clock(), seal_interval_s=3600)
    log.record("read.accepted", read_id="a")
    log.flush()  # first flush seals
    assert json.loads(head_path(path).read_text())["seq"] == 1
    log.record("read.accepted", read_id="b")
    log.flush()  # durable, but within the interval: not resealed
    assert json.loads(head_path(path).read_text())["seq"] == 1
    result = verify_log(path)
    assert result.ok and any("after seq 1" in w for w in result.warnings)
    log.close()
    assert json.loads(head_path(path).read_text())["seq"] == 2
    assert verify_log(path).ok

_PRISTINE: dict[str, bytes] = {}


def _pristine(tmp_path_factory) -> tuple[bytes, bytes]:
    if not _PRISTINE:
        path = write_log(tmp_path_factory.mktemp("pristine") / "a.jsonl", 30)
        _PRISTINE["log"], _PRISTINE["head"] = path.read_bytes(), head_path(path).read_bytes()
    return _PRISTINE["log"], _PRISTINE["head"]


@settings(max_examples=1000, deadline=None)
@given(position=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_any_byte_change_fails_verification(tmp_path_factory, position, flip) -> None:
    log_bytes, head_bytes = _pristine(tmp_path_factory)
    data = bytearray(log_bytes)
    i = int(position * len(data))
    data[i] ^= flip
    path = tmp_path_factory.mktemp("flip") / "a.jsonl"
    path.write_bytes(bytes(data))
    head_path(path).write_bytes(head_bytes)
    result = verify_log(path)
    assert not result.ok and result.first_bad_seq is not None


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_any_deletion_or_swap_of_lines_fails_and_names_the_first(tmp_path_factory, data) -> None:
    log_bytes, head_bytes = _pristine(tmp_path_factory)
    lines_ = log_bytes.splitlines(keepends=True)
    first = data.draw(st.integers(0, len(lines_) - 1))
    if data.draw(st.booleans()):
        last = data.draw(st.integers(first, len(lines_) - 1))
        del lines_[first:last + 1]
    else:
        other = data.draw(st.integers(0, len(lines_) - 1).filter(lambda j: j != first))
        first, other = min(first, other), max(first, other)
        lines_[first], lines_[other] = lines_[other], lines_[first]
    path = tmp_path_factory.mktemp("cut") / "a.jsonl"
    path.write_bytes(b"".join(lines_))
    head_path(path).write_bytes(head_bytes)
    result = verify_log(path)
    assert not result.ok and result.first_bad_seq == first + 1


WRITE_FAILURE_RUNNER = r'''
import json, resource, signal, sys
from pathlib import Path
from agent.audit.log import AuditError, AuditLog, verify_log
from agent.policy.signing import load_private_key

import agent.audit.log as audit_log
encodes = [0]
real_encode = audit_log._encode
def counting_encode(*args):
    encodes[0] += 1
    return real_encode(*args)
audit_log._encode = counting_encode
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # EFBIG instead of being killed
path, key_path = Path(sys.argv[1]), Path(sys.argv[2])
key = load_private_key(key_path)
log = AuditLog(path, key, checkpoint_every=7, buffer_records=8, seal_interval_s=0.0)
for i in range(10):
    log.record("read.accepted", read_id=f"ok{i}")
log.flush()
size, seq = path.stat().st_size, log.seq
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
# Room for about two records: the next batch is written in part, then EFBIG.
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 400, hard))
out = {"flush_errors": 0}
for i in range(20):                # buffer_records=8: record() itself hits the limit too
    log.record("read.accepted", read_id=f"full{i}", pad="x" * 100)
for attempt in range(3):            # the disk stays full for a while
    try:
        log.flush()
    except AuditError as exc:
        out["flush_errors"] += 1
        out["error"] = str(exc)
out["size_after_failure"] = path.stat().st_size
out["seq_after_failure"] = log.seq
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))   # space comes back
log.record("read.accepted", read_id="after")
log.flush()
log.close()
result = verify_log(path, key.public_key())
recs = [json.loads(line) for line in path.read_text().splitlines()]
out.update(size=size, seq=seq, ok=result.ok, problem=result.problem, encodes=encodes[0],
           lines=len(recs),
           seqs=[r["seq"] for r in recs],
           ids=[r["fields"]["read_id"] for r in recs if r["event"] == "read.accepted"])
print(json.dumps(out))
'''


def test_failed_write_leaves_the_chain_whole_and_is_retried(tmp_path) -> None:
    """Regression: a failed append (EFBIG under RLIMIT_FSIZE, like a full disk) used to advance
    seq/prev and drop the pending records first, leaving a gap (and a partial line) that
    `plategate audit verify` rejected. Now the partial write is cut off, the records stay
    pending (already chained) and flush() raises; the next flush writes them all."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", WRITE_FAILURE_RUNNER, str(tmp_path / "a.jsonl"),
                           str(KEYS / "unit-TEST-ONLY.key")], capture_output=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert out["flush_errors"] == 3 and "kept pending" in out["error"]
    assert out["encodes"] == out["lines"], "records were hashed again on a retry"
    assert out["size_after_failure"] == out["size"], "partial write left in the file"
    assert out["seq_after_failure"] == out["seq"]
    assert out["ok"], out["problem"]
    assert out["seqs"] == list(range(1, len(out["seqs"]) + 1))
    assert out["ids"] == [f"ok{i}" for i in range(10)] + [f"full{i}" for i in range(20)] + ["after"]
