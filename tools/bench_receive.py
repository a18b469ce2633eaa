#!/usr/bin/env python3
"""Receiver benchmark: verified, unsealed and stored reads per second, and the unit's cost
of signing and sealing a read, side by side with an unsigned read in the same run.

Unit side (`unit`): median (and best) wall time and median CPU time (of this process) per
message over --repeats timings of --unit-reads messages each,
for one typical read payload (plate, confidence, timestamp, camera, location; no images):
- unsigned: the plategate.read/1 envelope the unit built before (the baseline);
- signed: plategate.read/2 clear form (Ed25519 over the canonical bytes);
- signed_sealed: signed, then sealed with HPKE (X25519, HKDF-SHA256, ChaCha20-Poly1305).

Receiver side (`receive`): a local mosquitto and, for PostgreSQL, a real server in a temp dir
(tests/pg_server.py). Every message is sealed and signed (the receiver's most expensive
path: schema, unseal, schema again, signature, store). For each store (SQLite, PostgreSQL)
and 1 or 2 receivers (`plategate receive` processes on one shared subscription, one
database): the receivers subscribe once (the broker keeps their sessions), are stopped, the
--reads messages are queued at the broker, the receivers are started again, and the rate is
the reads stored between the first and the last poll of the database's row count (every
50 ms) over that time. Receiver start-up is not counted; every read is acknowledged only
after its commit, as in production. Load averages before and after each run are recorded
(the machine may be shared), and the CPU time per stored read of the receiver processes,
mosquitto and the PostgreSQL server over the same interval (`cpu_us_per_read`), which says
what the work costs independently of how much of the CPU others were using.

Usage: nice .venv/bin/python tools/bench_receive.py [--reads 30000] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agent.delivery.records import encode_payload  # noqa: E402
from agent.provenance.messages import clear_message, wire_message  # noqa: E402
from mqtt_broker import MosquittoBroker  # noqa: E402
from receiver_kit import (Publisher, department_key, new_unit, receiver_process,  # noqa: E402
                          sample_fields, stop_process, write_config)

TOPIC = "plategate/county/reads"


def unsigned_v1(read_id: str, destination: str, purpose: str, version: int, payload: bytes) -> bytes:
    """The plategate.read/1 message as the unit built it before signing (the baseline)."""
    quote = json.encoder.encode_basestring_ascii
    head = (f'{{"schema":"plategate.read/1","read_id":{quote(read_id)},'
            f'"destination":{quote(destination)},"purpose":{quote(purpose)},'
            f'"policy_version":{int(version)},"read":')
    return head.encode() + payload + b"}"


def unit_costs(reads: int, repeats: int) -> dict:
    unit = new_unit("unit-bench")
    _, _, dept_pub = department_key(Path(tempfile.mkdtemp(prefix="pg-bench-keys-")))
    payload = encode_payload(sample_fields(1))
    ids = [f"r{i:08d}" for i in range(reads)]
    cases = {
        "unsigned": lambda rid: unsigned_v1(rid, "county", "stolen_vehicle", 3, payload),
        "signed": lambda rid: clear_message(unit, "county", rid, "stolen_vehicle", 3, payload),
        "signed_sealed": lambda rid: wire_message(unit, "county", rid, "stolen_vehicle", 3, payload,
                                                  seal_to=dept_pub,
                                                  routing_fields=frozenset({"camera_id"})).data,
    }
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, build in cases.items():          # interleaved: the same load for all three
            start, start_cpu = time.perf_counter(), time.process_time()
            for rid in ids:
                build(rid)
            wall[name].append((time.perf_counter() - start) / reads * 1e6)
            cpu[name].append((time.process_time() - start_cpu) / reads * 1e6)
    sizes = {name: len(build("r00000000")) for name, build in cases.items()}
    return {"payload_bytes": len(payload),
            "us_per_read": {n: round(statistics.median(t), 2) for n, t in wall.items()},
            "cpu_us_per_read": {n: round(statistics.median(t), 2) for n, t in cpu.items()},
            "min_us_per_read": {n: round(min(t), 2) for n, t in wall.items()},
            "message_bytes": sizes}


def sealed_messages(unit, dept_pub: bytes, count: int) -> list[bytes]:
    payload_of = [encode_payload(dict(sample_fields(i), plate=f"KT{i:06d}")) for i in range(count)]
    return [wire_message(unit, "county", f"b{i:08d}", "stolen_vehicle", 3, payload_of[i],
                         seal_to=dept_pub, routing_fields=frozenset({"camera_id"})).data
            for i in range(count)]


def count_rows(store) -> int:
    return store.count_reads()


def storage_bytes(store, sqlite_path: Path) -> int:
    """Bytes the reads take: PostgreSQL's table with its indexes, or the SQLite file (+ WAL)."""
    if store.dialect == "postgresql":
        cur = store.conn.cursor()
        cur.execute("SELECT pg_total_relation_size('reads')")
        return int(cur.fetchone()[0])
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in sqlite_path.parent.glob(sqlite_path.name + "*"))


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU of a process and its direct children (the PostgreSQL postmaster and its backends)."""
    total = cpu_seconds(root_pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root_pid:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def wait_subscribed(broker: MosquittoBroker, client_ids: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = broker.log_path.read_text(errors="replace")
        if all(f"Received SUBSCRIBE from {cid}" in log for cid in client_ids):
            return
        time.sleep(0.05)
    raise TimeoutError(f"receivers {client_ids} did not subscribe")


def run_receivers(workdir: Path, broker: MosquittoBroker, messages: list[bytes], unit, dept_key: Path,
                  receivers: int, dsn: str | None, label: str, pg_pid: int | None = None) -> dict:
    from agent.receiver.store import open_store
    db = workdir / f"{label}.sqlite"
    ids = [f"bench-{label}-{i}" for i in range(receivers)]
    configs = [write_config(workdir / f"{cid}.toml", broker, client_id=cid, topics=[TOPIC],
                            destinations=["county"], sqlite=db, dsn=dsn, private_keys=[dept_key],
                            share_group=f"g-{label}", batch_size=500, batch_wait_ms=20,
                            status_prefix=None) for cid in ids]
    store = open_store(dsn, db)
    store.add_unit(unit.unit_id, unit.key.public_key())
    logs = [workdir / f"{cid}.log" for cid in ids]
    procs = [receiver_process(c, log) for c, log in zip(configs, logs)]
    wait_subscribed(broker, ids)
    for proc in procs:                          # sessions stay at the broker, queueing reads
        stop_process(proc)
    publisher = Publisher(broker, client_id=f"bench-pub-{label}")
    publisher.publish(TOPIC, messages, timeout=600)
    publisher.close()
    load_before = os.getloadavg()
    procs = [receiver_process(c, log) for c, log in zip(configs, logs)]
    total = len(messages)
    first_t = first_n = None
    cpu_first: dict[str, float] = {}

    def cpu_now() -> dict[str, float]:
        return {"receivers": sum(cpu_seconds(p.pid) for p in procs),
                "mosquitto": cpu_seconds(broker.process.pid),
                "postgresql": tree_cpu_seconds(pg_pid) if pg_pid else 0.0}
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        n = count_rows(store)
        now = time.monotonic()
        if n and first_t is None:
            first_t, first_n, cpu_first = now, n, cpu_now()
        if n >= total:
            break
        time.sleep(0.05)
    end_t = time.monotonic()
    cpu_end = cpu_now()
    load_after = os.getloadavg()
    for proc in procs:
        stop_process(proc)
    stored = count_rows(store)
    counts = store.counts()
    table_bytes = storage_bytes(store, db)
    store.close()
    rate = (stored - first_n) / (end_t - first_t) if first_t and end_t > first_t else None
    return {"store": "postgresql" if dsn else "sqlite", "receivers": receivers, "reads": total,
            "stored": stored, "rejected": {k: v for k, v in counts.items()
                                           if k not in ("stored", "duplicate")},
            "reads_per_s": round(rate, 1) if rate else None,
            "seconds": round(end_t - first_t, 2) if first_t else None,
            "bytes_per_read_stored": round(table_bytes / stored, 1) if stored else None,
            "cpu_us_per_read": {k: round((cpu_end[k] - cpu_first.get(k, 0.0)) / max(1, stored - first_n) * 1e6, 1)
                                for k in cpu_end} if first_t else None,
            "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=30000, help="messages per receiver run")
    parser.add_argument("--unit-reads", type=int, default=5000, help="messages per unit-side timing")
    parser.add_argument("--repeats", type=int, default=5, help="unit-side timings (median taken)")
    parser.add_argument("--stores", default="sqlite,postgresql", help="comma-separated")
    parser.add_argument("--receivers", default="1,2", help="comma-separated receiver counts")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()

    result: dict = {"cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
                    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result["unit"] = unit_costs(args.unit_reads, args.repeats)
    workdir = Path(tempfile.mkdtemp(prefix="plategate-bench-receive-"))
    unit = new_unit("unit-bench")
    _, dept_key, dept_pub = department_key(workdir / "dept")
    messages = sealed_messages(unit, dept_pub, args.reads)
    broker = MosquittoBroker(workdir / "mosquitto").start()
    pg = None
    runs = []
    try:
        for store_name in args.stores.split(","):
            dsn = None
            if store_name == "postgresql":
                from pg_server import PostgresServer, find_pg_bin
                if pg is None:
                    bin_dir = find_pg_bin()
                    if bin_dir is None:
                        raise SystemExit("PostgreSQL not installed: run tools/install_system_deps.sh")
                    pg = PostgresServer(bin_dir).start()
            for count in (int(c) for c in args.receivers.split(",")):
                if store_name == "postgresql":
                    dsn = pg.new_database()
                label = f"{store_name}-{count}"
                pg_pid = pg.postmaster_pid() if dsn else None
                runs.append(run_receivers(workdir, broker, messages, unit, dept_key, count, dsn, label,
                                          pg_pid))
                if not args.json:
                    print(json.dumps(runs[-1]), file=sys.stderr)
    finally:
        broker.stop()
        if pg is not None:
            pg.stop()
    result["receive"] = runs
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
