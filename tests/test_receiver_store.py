"""The receiver's store on SQLite and on a real PostgreSQL server, and the property that a
receiver stores exactly the fields the policy allowed the destination."""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.delivery.records import Delivery, encode_payload
from helpers.soak import destination_doc, policy_doc
from agent.policy.engine import decide
from agent.policy.minimise import project_fields
from agent.policy.schema import policy_from_dict
from agent.provenance.egress import sendable
from agent.provenance.keys import raw_public
from agent.reads import HotlistHit, ReadEvent
from agent.receiver.config import load_receiver_config
from agent.receiver.pgdsn import connect_kwargs
from agent.receiver.service import Incoming, Receiver
from agent.receiver.store import open_store, row_to_read
from receiver_kit import (Publisher, ThreadedReceiver, check_schema, department_key, genuine,
                          new_unit, sample_fields, wait_until, write_config)

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey


class FakeBroker:
    """Only what write_config reads of a broker: no broker is contacted in these tests."""

    url, tls, port = "mqtt://127.0.0.1:1", None, 1


def offline_receiver(tmp_path, *, dsn=None, destinations=("dest",), private_keys=()) -> Receiver:
    config = write_config(tmp_path / "rx.toml", FakeBroker, client_id="rx-prop", topics=["t/#"],
                          destinations=destinations, sqlite=tmp_path / "rx.sqlite", dsn=dsn,
                          private_keys=private_keys)
    cfg = load_receiver_config(config)
    return Receiver(cfg, open_store(cfg.storage.dsn, cfg.storage.sqlite))


# --- the store, on both databases -----------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_and_dsn(request, tmp_path):
    """The receiver's store on SQLite and on a real PostgreSQL (an integration test: it starts
    the server, through getfixturevalue, which the marking at collection cannot see)."""
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgresql" else None
    store = open_store(dsn, tmp_path / "rx.sqlite")
    yield store, dsn
    store.close()


def test_schema_created_once_then_migrations_are_a_no_op(store_and_dsn, tmp_path):
    store, dsn = store_and_dsn
    assert store.migrate() == 1
    again = open_store(dsn, tmp_path / "rx.sqlite")       # a second receiver starting later
    try:
        cur = again.conn.cursor()
        cur.execute("SELECT version FROM schema_migrations")
        assert [row[0] for row in cur.fetchall()] == [1]
    finally:
        again.close()


def test_batches_drop_duplicates_and_keep_absent_fields_null(store_and_dsn, tmp_path):
    store, _ = store_and_dsn
    rx = offline_receiver(tmp_path)
    unit = new_unit("unit-1")
    rx.store.close()
    rx.store = store
    store.add_unit("unit-1", unit.key.public_key())
    rx._refresh_registry()
    fields = [{"plate": "AB123"}, {"confidence": 0.5, "camera_id": "c"}, {}]
    batch = [Incoming(i + 1, 1, "t/x", genuine(unit, "dest", i, fields=f), time.time(), 0)
             for i, f in enumerate(fields)]
    rows = [rx.check(m)[0] for m in batch]
    assert store.commit_batch(rows) == 3
    assert store.commit_batch(rows[:2]) == 0                  # at-least-once: duplicates dropped
    assert store.counts() == {"stored": 3, "duplicate": 2}
    stored = {r["read_id"]: r for r in store.read_rows()}
    for i, f in enumerate(fields):
        row = stored[f"r{i:08d}"]
        assert row_to_read(row) == f                           # a NULL column: no field
    assert stored["r00000001"]["plate"] is None and stored["r00000002"]["camera_id"] is None


def test_registry_add_revoke_and_version(store_and_dsn):
    store, _ = store_and_dsn
    unit = new_unit("unit-7")
    v0 = store.registry_version()
    assert store.add_unit("unit-7", unit.key.public_key(), "north gate") == unit.key_id
    assert store.add_unit("unit-7", unit.key.public_key()) == unit.key_id   # idempotent
    assert store.registry_version() == v0 + 1
    assert not store.unit_keys()[("unit-7", unit.key_id)].revoked
    assert store.revoke_unit("unit-7") == 1 and store.revoke_unit("unit-7") == 0
    assert store.unit_keys()[("unit-7", unit.key_id)].revoked
    assert store.registry_version() == v0 + 2


# --- PostgreSQL end to end: two receivers, one database ---------------------------------------

@pytest.mark.integration
def test_two_receivers_into_one_postgresql(tmp_path, mosquitto, postgres_dsn):
    unit = new_unit("unit-0001")
    dept, dept_key, dept_pub = department_key(tmp_path / "dept")
    rxs = []
    for i in range(2):
        config = write_config(tmp_path / f"rx{i}.toml", mosquitto, client_id=f"rx-pg-{i}",
                              topics=["plategate/county/reads"], destinations=["county"],
                              dsn=postgres_dsn, private_keys=[dept_key], require_sealed=True)
        rxs.append(ThreadedReceiver(config))
    rxs[0].store.add_unit("unit-0001", unit.key.public_key())
    for rx in rxs:
        rx.start()
    try:
        publisher = Publisher(mosquitto)
        messages = [genuine(unit, "county", i, seal_to=dept_pub, routing=("camera_id",))
                    for i in range(400)]
        publisher.publish("plategate/county/reads", messages + messages[:50])   # 50 redelivered
        publisher.close()
        assert wait_until(lambda: rxs[0].store.count_reads() == 400
                          and sum(rxs[0].store.counts().values()) == 450, 60)
        assert rxs[0].receiver.counts["stored"] and rxs[1].receiver.counts["stored"]
        assert rxs[0].store.counts() == {"stored": 400, "duplicate": 50}
        rows = {r["read_id"]: r for r in rxs[1].store.read_rows()}
        assert all(r["sealed"] is True and r["unit_id"] == "unit-0001" for r in rows.values())
        assert row_to_read(rows["r00000007"]) == json.loads(genuine(unit, "county", 7))["read"]
    finally:
        for rx in rxs:
            rx.close()


@pytest.mark.integration
def test_receiver_survives_a_lost_postgresql_connection(tmp_path, mosquitto, postgres_dsn):
    """The server drops the receiver's connection (as in a restart or failover): nothing
    acknowledged is lost, the receiver reconnects and stores what came meanwhile."""
    from pg8000.native import Connection
    unit = new_unit("unit-0001")
    config = write_config(tmp_path / "rx.toml", mosquitto, client_id="rx-pg-lost",
                          topics=["plategate/county/reads"], destinations=["county"], dsn=postgres_dsn)
    rx = ThreadedReceiver(config)
    rx.store.add_unit("unit-0001", unit.key.public_key())
    rx.start()
    try:
        publisher = Publisher(mosquitto)
        publisher.publish("plategate/county/reads", [genuine(unit, "county", i) for i in range(50)])
        assert wait_until(lambda: rx.store.count_reads() == 50, 30)
        with Connection(**connect_kwargs(postgres_dsn)) as admin:
            killed = admin.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert killed and all(row[0] for row in killed)
        publisher.publish("plategate/county/reads", [genuine(unit, "county", i) for i in range(50, 150)])
        publisher.close()
        with Connection(**connect_kwargs(postgres_dsn)) as check:
            assert wait_until(lambda: check.run("SELECT COUNT(*) FROM reads")[0][0] == 150, 60)
            assert check.run("SELECT COUNT(DISTINCT read_id) FROM reads")[0][0] == 150
    finally:
        rx.close()


# --- property: stored == allowed ------------------------------------------------------------

FIELD_SETS = st.frozensets(st.sampled_from(
    ["plate", "plate_crop", "vehicle_image", "confidence", "timestamp", "camera_id", "location"]))
READS = st.builds(
    ReadEvent,
    plate=st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=2, max_size=8),
    confidence=st.floats(0.5, 1.0), seen_at=st.floats(1.7e9, 1.8e9),
    camera_id=st.text(alphabet="abcxyz-0123", min_size=1, max_size=12),
    read_id=st.text(alphabet="abcdef0123456789", min_size=8, max_size=32),
    latitude=st.none() | st.floats(-80, 80), longitude=st.floats(-179, 179),
    plate_crop_jpeg=st.none() | st.binary(min_size=1, max_size=40),
    vehicle_jpeg=st.none() | st.binary(min_size=1, max_size=40),
    hits=st.lists(st.sampled_from([HotlistHit("stolen-ct", 3, "stolen_vehicle", "NCIC"),
                                   HotlistHit("ice", 1, "immigration_enforcement", "x")]),
                  max_size=2, unique=True).map(tuple))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(read=READS, fields=FIELD_SETS, plate_form=st.sampled_from(["clear", "hmac_sha256"]),
       precision=st.sampled_from([0, 100, 1000]), seal=st.booleans(),
       routing=st.frozensets(st.sampled_from(["camera_id", "timestamp", "confidence", "location"])))
def test_receiver_stores_exactly_the_fields_the_policy_allowed(tmp_path_factory, read, fields,
                                                               plate_form, precision, seal, routing):
    tmp = tmp_path_factory.mktemp("prop")
    unit = new_unit("unit-p")
    dept = X25519PrivateKey.generate()
    dept_key_path = None
    if seal:
        from agent.provenance.keys import write_keypair
        dept_key_path, _ = write_keypair(tmp / "dept", dept)
    dest_doc = destination_doc("dest", "mqtts://127.0.0.1:1", "t/dest", pin="0" * 64, fields=sorted(fields),
                               plate_form=plate_form, location_precision_m=precision,
                               purposes=("stolen_vehicle", "records_retention"),
                               seal_to=raw_public(dept.public_key()) if seal else None,
                               routing_metadata=sorted(routing & fields))
    now = read.seen_at + 10
    policy = policy_from_dict(policy_doc(1, [dest_doc], now, prohibited_purposes=["immigration_enforcement"]),
                              signer_key_id="", digest="d")
    dest = policy.destination("dest")
    decision = decide(read, dest, policy, now)
    assert decision.allowed
    allowed = project_fields(read, decision, dest, b"k" * 32)
    payload = encode_payload(allowed)
    delivery = Delivery(1, "dest", read.read_id, "d", 1, "t", "records_retention", payload, read, now)
    data = sendable(delivery, dest, unit)
    envelope = check_schema(data)
    assert ("sealed" in envelope) == seal
    rx = offline_receiver(tmp, private_keys=[dept_key_path] if seal else [])
    try:
        rx.store.add_unit("unit-p", unit.key.public_key())
        rx.process([Incoming(1, 0, "t/dest", data, now, 0)])
        (row,) = list(rx.store.read_rows())
    finally:
        rx.store.close()
    stored = row_to_read(row)
    assert stored == json.loads(payload)
    assert "plate" not in stored if plate_form != "clear" else "plate_hmac" not in stored
    assert {"plate_crop", "vehicle_image", "confidence", "timestamp", "camera_id", "location"} \
        & set(stored) <= fields


def test_export_json_keeps_absent_fields_absent_and_csv_is_flat(tmp_path):
    import csv
    import io
    import subprocess
    import sys
    from receiver_kit import ROOT
    rx = offline_receiver(tmp_path)
    unit = new_unit("unit-1")
    rx.store.add_unit("unit-1", unit.key.public_key())
    sent = [sample_fields(1), {"plate_hmac": "ab" * 32, "timestamp": "2026-12-05T00:00:00.000Z"},
            {"confidence": 0.5, "hits": [{"list_id": "ct", "purpose": "stolen_vehicle"}]}]
    rx.process([Incoming(i, 0, "t/dest", genuine(unit, "dest", i, fields=f), time.time(), 0)
                for i, f in enumerate(sent)])
    rx.store.close()

    def export(fmt: str, *extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "agent", "receive", "export", "--config",
                               str(tmp_path / "rx.toml"), "--format", fmt, *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    records = json.loads(export("json", "--since", "2026-01-01"))
    assert [r["read"] for r in sorted(records, key=lambda r: r["read_id"])] == sent
    assert {r["unit_id"] for r in records} == {"unit-1"} and not any(r["sealed"] for r in records)
    rows = list(csv.DictReader(io.StringIO(export("csv", "--since", "2026-01-01"))))
    by_id = {r["read_id"]: r for r in rows}
    assert by_id["r00000001"]["plate"] == "" and by_id["r00000001"]["plate_hmac"] == "ab" * 32
    assert by_id["r00000000"]["latitude"] == "41.765" and by_id["r00000000"]["plate"] == "KT00001"
    assert json.loads(by_id["r00000002"]["hits"]) == sent[2]["hits"]
    assert json.loads(export("json", "--since", "2999-01-01")) == []


def test_bad_receiver_config_names_every_problem_and_exits_78(tmp_path):
    import subprocess
    import sys
    from receiver_kit import ROOT
    config = tmp_path / "rx.toml"
    config.write_text('[broker]\nurl = "mqtt://10.0.0.1:1883"\nclient_id = "rx 1"\ntopics = []\n'
                      '[accept]\ndestinations = ["County"]\nrequire_sealed = true\n'
                      '[storage]\nbatchsize = 10\n')
    done = subprocess.run([sys.executable, "-m", "agent", "receive", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    for where in ("broker.client_id", "storage.batchsize: unknown key (did you mean 'batch_size'?)"):
        assert where in done.stderr, done.stderr
    config.write_text(config.read_text().replace("batchsize", "batch_size").replace("rx 1", "rx-1"))
    done = subprocess.run([sys.executable, "-m", "agent", "receive", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    for where in ("broker.url", "broker.topics: needs at least one topic",
                  "accept.destinations[0]", "accept.private_keys"):
        assert where in done.stderr, done.stderr


def test_postgresql_batch_larger_than_one_insert(postgres_dsn, tmp_path, monkeypatch):
    """A batch is split into multi-row INSERTs of ROWS_PER_INSERT; new and duplicate counts
    stay exact across the pieces and the whole batch is still one transaction."""
    from agent.receiver.store import PostgresStore
    monkeypatch.setattr(PostgresStore, "ROWS_PER_INSERT", 2)
    store = open_store(postgres_dsn, None)
    try:
        rx = offline_receiver(tmp_path)
        rx.store.close()
        rx.store = store
        unit = new_unit("unit-1")
        store.add_unit("unit-1", unit.key.public_key())
        rx._refresh_registry()
        rows = [rx.check(Incoming(i + 1, 1, "t/x", genuine(unit, "dest", i), time.time(), 0))[0]
                for i in range(5)]
        assert store.commit_batch(rows[:3]) == 3
        assert store.commit_batch(rows) == 2
        assert store.counts() == {"stored": 5, "duplicate": 3} and store.count_reads() == 5
    finally:
        store.close()


def test_unusable_dsn_exits_78_naming_it(tmp_path, mosquitto):
    """A DSN pg8000 would have to half-ignore (here: a clear-text fallback) stops the receiver
    at start with the parameter named, before any connection is tried."""
    import subprocess
    import sys
    from receiver_kit import ROOT
    config = write_config(tmp_path / "rx.toml", mosquitto, client_id="rx-bad-dsn",
                          topics=["plategate/county/reads"], destinations=["county"],
                          dsn="postgresql://rx@127.0.0.1:1/plategate?sslmode=prefer")
    done = subprocess.run([sys.executable, "-m", "agent", "receive", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    assert "storage.dsn: sslmode=prefer may fall back to clear text" in done.stderr, done.stderr
