"""The department's receiver against real mosquitto brokers: shared subscriptions, rejections,
registry, SIGKILL mid-stream, TLS with a client certificate, end to end from a unit's gate."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.soak import build_stack, destination_doc, make_read, policy_doc
from agent.delivery.service import wait_until as drained
from agent.receiver.store import open_store
from receiver_kit import (ROOT, Publisher, ThreadedReceiver, check_schema, department_key, genuine,
                          new_unit, receiver_process, stop_process, unit_pub_file, wait_until,
                          write_config)

pytestmark = pytest.mark.integration

TOPIC = "plategate/county/reads"


def plategate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def register(config: Path, signer, tmp_path: Path) -> None:
    pub = unit_pub_file(signer, tmp_path / "unit-keys")
    done = plategate("receive", "units", "add", signer.unit_id, "--config", str(config),
                     "--key", str(pub), "--key-id", signer.key_id)
    assert done.returncode == 0, done.stderr
    assert f"key {signer.key_id}" in done.stdout


def stored_ids(db: Path) -> set[str]:
    store = open_store(None, db)
    try:
        return store.read_ids()
    finally:
        store.close()


def counts(db: Path) -> dict:
    store = open_store(None, db)
    try:
        return store.counts()
    finally:
        store.close()


def prime(publisher: Publisher, unit, dbs: list[Path]) -> None:
    """Send sentinel reads until every receiver stored one (so each has subscribed): a read
    published before a subscriber is there is not kept for it."""
    sentinel = 0
    while not all(stored_ids(db) for db in dbs):
        assert sentinel < 400, "a receiver never got a read"
        publisher.publish(TOPIC, [genuine(unit, "county", sentinel, prefix="s")])
        sentinel += 1
        time.sleep(0.05)


def receiver_pair(tmp_path: Path, broker, unit) -> tuple[list[Path], list[Path]]:
    """Configs (and their SQLite files) of two receivers in one share group, `unit` registered."""
    dbs = [tmp_path / f"rx{i}.sqlite" for i in range(2)]
    configs = [write_config(tmp_path / f"rx{i}.toml", broker, client_id=f"rx-{i}", topics=[TOPIC],
                            destinations=["county"], sqlite=dbs[i]) for i in range(2)]
    for config in configs:
        register(config, unit, tmp_path)
    return dbs, configs


# --- shared subscription ---------------------------------------------------------------------

def test_two_receivers_split_the_reads_disjointly_and_get_all(tmp_path, mosquitto):
    unit = new_unit("unit-0001")
    dbs, configs = receiver_pair(tmp_path, mosquitto, unit)
    procs = [receiver_process(c, tmp_path / f"rx{i}.log") for i, c in enumerate(configs)]
    try:
        publisher = Publisher(mosquitto)
        prime(publisher, unit, dbs)
        messages = [genuine(unit, "county", i) for i in range(600)]
        publisher.publish(TOPIC, messages)
        publisher.close()
        expected = {f"r{i:08d}" for i in range(600)}
        assert wait_until(lambda: expected <= stored_ids(dbs[0]) | stored_ids(dbs[1]), 60)
    finally:
        for proc in procs:
            assert stop_process(proc) == 0
    parts = [{i for i in stored_ids(db) if i.startswith("r")} for db in dbs]
    assert parts[0] and parts[1], "one receiver got nothing"
    assert not parts[0] & parts[1], "a read went to both receivers"
    assert parts[0] | parts[1] == expected
    sentinels = {i for db in dbs for i in stored_ids(db) if i.startswith("s")}   # sent before both
    assert sum(counts(db).get("stored", 0) for db in dbs) == 600 + len(sentinels)  # were listening


# --- rejections ---------------------------------------------------------------------------

def test_forged_replayed_misaddressed_and_foreign_sealed_reads_are_rejected(tmp_path, mosquitto):
    unit = new_unit("unit-0001")
    dept, dept_key_path, dept_pub = department_key(tmp_path / "dept")
    _, _, other_pub = department_key(tmp_path / "other", "other")
    db = tmp_path / "rx.sqlite"
    config = write_config(tmp_path / "rx.toml", mosquitto, client_id="rx-1", topics=[TOPIC],
                          destinations=["county"], sqlite=db, private_keys=[dept_key_path])
    register(config, unit, tmp_path)
    rx = ThreadedReceiver(config).start()
    try:
        good = genuine(unit, "county", 1, seal_to=dept_pub, routing=("camera_id",))
        forged = json.loads(genuine(unit, "county", 2))
        forged["read"]["plate"] = "FORGED1"
        relabelled = json.loads(genuine(unit, "state-police", 3))
        relabelled["destination"] = "county"
        stranger = new_unit("unit-0001")
        bad = {
            "bad_signature": [json.dumps(forged).encode(), json.dumps(relabelled).encode()],
            "wrong_destination": [genuine(unit, "state-police", 4)],
            "undecryptable": [genuine(unit, "county", 5, seal_to=other_pub)],
            "unknown_unit": [genuine(stranger, "county", 6)],
            "unsigned": [json.dumps({"schema": "plategate.read/1", "read_id": "r00000007",
                                     "destination": "county", "purpose": "stolen_vehicle",
                                     "policy_version": 1, "read": {"plate": "AB1"}}).encode()],
            "invalid": [b"\xff not json"],
        }
        publisher = Publisher(mosquitto)
        publisher.publish(TOPIC, [good, good])                 # replayed: the same read twice
        publisher.publish(TOPIC, [m for msgs in bad.values() for m in msgs])
        publisher.publish(TOPIC, [genuine(unit, "county", 99)])  # sentinel, after all of them
        publisher.close()
        assert wait_until(lambda: "r00000099" in rx.store.read_ids(), 30)
        assert rx.store.read_ids() == {"r00000001", "r00000099"}
        tally = rx.store.counts()
        assert tally["duplicate"] == 1 and tally["stored"] == 2
        for why, msgs in bad.items():
            assert tally.get(why) == len(msgs), (why, tally)
            samples = rx.store.samples(why)
            assert [s.message for s in samples] == msgs and all(s.topic == TOPIC for s in samples)
        stats = plategate("receive", "stats", "--config", str(config))
        assert json.loads(stats.stdout)["counts"]["bad_signature"] == 2
    finally:
        rx.close()


def test_revoked_units_later_reads_are_rejected(tmp_path, mosquitto):
    unit = new_unit("unit-0009")
    db = tmp_path / "rx.sqlite"
    config = write_config(tmp_path / "rx.toml", mosquitto, client_id="rx-1", topics=[TOPIC],
                          destinations=["county"], sqlite=db)
    register(config, unit, tmp_path)
    witness = new_unit("unit-0010")
    register(config, witness, tmp_path)
    rx = ThreadedReceiver(config).start()
    try:
        publisher = Publisher(mosquitto)
        publisher.publish(TOPIC, [genuine(unit, "county", 1)])
        assert wait_until(lambda: "r00000001" in rx.store.read_ids(), 30)
        done = plategate("receive", "units", "revoke", "unit-0009", "--config", str(config))
        assert done.returncode == 0, done.stderr
        listed = json.loads(plategate("receive", "units", "list", "--json", "--config", str(config)).stdout)
        assert [u["revoked_at"] is not None for u in listed if u["unit_id"] == "unit-0009"] == [True]
        publisher.publish(TOPIC, [genuine(unit, "county", 2), genuine(witness, "county", 3)])
        publisher.close()
        assert wait_until(lambda: "r00000003" in rx.store.read_ids(), 30)
        assert rx.store.read_ids() == {"r00000001", "r00000003"}   # the earlier read stays
        assert rx.store.counts()["revoked"] == 1
    finally:
        rx.close()
    again = plategate("receive", "units", "add", "unit-0009", "--config", str(config), "--key",
                      str(unit_pub_file(unit, tmp_path / "unit-keys")), "--key-id", unit.key_id)
    assert again.returncode == 2 and "revoked" in again.stderr


def test_units_add_refuses_a_key_file_that_is_not_the_printed_id(tmp_path, mosquitto):
    unit, other = new_unit("unit-0001"), new_unit("unit-0002")
    config = write_config(tmp_path / "rx.toml", mosquitto, client_id="rx-1", topics=[TOPIC],
                          destinations=["county"], sqlite=tmp_path / "rx.sqlite")
    done = plategate("receive", "units", "add", "unit-0001", "--config", str(config), "--key",
                     str(unit_pub_file(other, tmp_path / "k")), "--key-id", unit.key_id)
    assert done.returncode == 2 and f"key id is {other.key_id}" in done.stderr
    assert json.loads(plategate("receive", "units", "list", "--json", "--config",
                                str(config)).stdout) == []


# --- crash safety ------------------------------------------------------------------------

def broker_log_count(broker, text: str) -> int:
    return broker.log_path.read_text(errors="replace").count(text)


def test_receiver_sigkilled_mid_stream_loses_nothing(tmp_path, mosquitto):
    """Every read the receiver acknowledged is in its database when it is killed.

    The kill lands while the receiver holds reads it cannot commit (the test holds the
    database's write lock, and the broker's log shows 100 or more reads sent to it and not
    acknowledged):
    a receiver that acknowledged before committing would lose exactly those. The broker's
    count of PUBACKs must not exceed the committed rows, and after a restart under the same
    client id every read is stored exactly once (the unacknowledged rest is redelivered)."""
    unit = new_unit("unit-0001")
    db = tmp_path / "rx.sqlite"
    config = write_config(tmp_path / "rx.toml", mosquitto, client_id="rx-kill", topics=[TOPIC],
                          destinations=["county"], sqlite=db, batch_size=50)
    register(config, unit, tmp_path)
    proc = receiver_process(config, tmp_path / "rx.log")
    publisher = Publisher(mosquitto)
    try:
        prime(publisher, unit, [db])
        total = 3000
        messages = [genuine(unit, "county", i) for i in range(total)]
        infos = [publisher.client.publish(TOPIC, m, qos=1) for m in messages]   # sent in background
        assert wait_until(lambda: len(stored_ids(db)) > 300, 60)
        lock = sqlite3.connect(str(db), isolation_level=None, timeout=60)
        lock.execute("BEGIN IMMEDIATE")            # the receiver's next commit now waits
        assert wait_until(lambda: broker_log_count(mosquitto, "Sending PUBLISH to rx-kill")
                          - broker_log_count(mosquitto, "Received PUBACK from rx-kill") >= 100, 60), \
            "the receiver holds no unacknowledged reads while its commit waits"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        lock.execute("ROLLBACK")
        lock.close()
        at_kill = stored_ids(db)
        acked = broker_log_count(mosquitto, "Received PUBACK from rx-kill")
        assert acked <= len(at_kill), f"{acked} reads acknowledged, {len(at_kill)} committed"
        assert len(at_kill) < total, "killed too late: the stream was already stored"
        for info in infos:
            info.wait_for_publish(30)
        proc = receiver_process(config, tmp_path / "rx.log")
        expected = {f"r{i:08d}" for i in range(total)} | {i for i in at_kill if i.startswith("s")}
        assert wait_until(lambda: stored_ids(db) == expected, 90), \
            f"missing {len(expected - stored_ids(db))} reads after restart"
    finally:
        publisher.close()
        stop_process(proc)
    assert at_kill <= expected


# --- TLS, status topics, end to end from a unit ---------------------------------------------

def test_unit_to_receiver_over_tls_sealed_and_clear(tmp_path, tls_broker_factory, collector_factory):
    """A unit's real delivery stack sends to two destinations on one TLS broker, one sealed:
    the receiver (client certificate) stores for each exactly the fields its rule allows,
    and nothing on the broker shows the sealed destination's plates."""
    from agent.delivery.mqtt_link import DestinationCredentials
    broker = tls_broker_factory(require_client_cert=True)
    tls = broker.tls
    sniffer = collector_factory(broker)
    dept, dept_key_path, dept_pub = department_key(tmp_path / "dept")
    creds = DestinationCredentials(client_cert=str(tls.client_cert), client_key=str(tls.client_key))
    stack = build_stack(tmp_path / "unit", unit_id="unit-0100",
                        credentials={"county": creds, "records": creds})
    sealed_dest = destination_doc("county", broker.url, "plategate/county/reads", pin=tls.server_key_sha256,
                                  ca_pem=tls.ca_pem, fields=("plate", "timestamp", "camera_id"),
                                  seal_to=dept_pub, routing_metadata=("camera_id",))
    clear_dest = destination_doc("records", broker.url, "plategate/records/reads",
                                 pin=tls.server_key_sha256, ca_pem=tls.ca_pem, fields=("confidence",))
    db = tmp_path / "rx.sqlite"
    config = write_config(tmp_path / "rx.toml", broker, client_id="rx-tls",
                          topics=["plategate/+/reads"], destinations=["county", "records"],
                          sqlite=db, private_keys=[dept_key_path])
    register(config, stack.gate.signer, tmp_path)
    rx = ThreadedReceiver(config).start()
    try:
        stack.rig.install(policy_doc(1, [sealed_dest, clear_dest], time.time()))
        stack.service.start()
        now = time.time()
        reads = [make_read(i, now) for i in range(40)]
        stack.outbox.accept(reads, now)
        assert drained(lambda: stack.outbox.depth("county") == 0 == stack.outbox.depth("records"), 60)
        assert wait_until(lambda: rx.store.count_reads() == 80, 30)
        rows = list(rx.store.read_rows())
    finally:
        rx.close()
        stack.close()
    from agent.receiver.store import row_to_read
    by_dest = {d: {r["read_id"]: r for r in rows if r["destination"] == d} for d in ("county", "records")}
    for read in reads:
        county = by_dest["county"][read.read_id]
        assert row_to_read(county).keys() == {"plate", "timestamp", "camera_id"}
        assert county["plate"] == read.plate and county["sealed"] and county["unit_id"] == "unit-0100"
        records = by_dest["records"][read.read_id]
        assert row_to_read(records) == {"confidence": 0.93} and not records["sealed"]
        assert records["plate"] is None and records["camera_id"] is None   # NULL, not ''
    assert sniffer.wait_count(80, 10)
    for msg in sniffer.snapshot():
        if msg.topic.endswith("/reads"):
            body = check_schema(msg.payload)
            if msg.topic == "plategate/county/reads":
                assert "sealed" in body and body["routing"] == {"camera_id": "cam-1"}
                assert not any(r.plate.encode() in msg.payload for r in reads)


def test_health_table_from_status_topics(tmp_path, mosquitto):
    db = tmp_path / "rx.sqlite"
    config = write_config(tmp_path / "rx.toml", mosquitto, client_id="rx-1", topics=[TOPIC],
                          destinations=["county"], sqlite=db)
    rx = ThreadedReceiver(config).start()
    try:
        publisher = Publisher(mosquitto)
        publisher.client.publish("plategate/unit-0001/status", b"online", qos=1, retain=True).wait_for_publish(5)
        publisher.publish("plategate/unit-0001/heartbeat", [json.dumps(
            {"unit_id": "unit-0001", "queue_depth": {"county": 5, "records": 2},
             "policy_version": 4}).encode()])
        publisher.client.publish("plategate/unit-0002/status", b"offline", qos=1, retain=True).wait_for_publish(5)
        publisher.close()
        assert wait_until(lambda: len(rx.store.health()) == 2 and rx.store.health()[0]["queue_depth"], 30)
    finally:
        rx.close()
    shown = json.loads(plategate("receive", "health", "--json", "--config", str(config)).stdout)
    by_unit = {row["unit_id"]: row for row in shown}
    assert by_unit["unit-0001"]["state"] == "online" and by_unit["unit-0001"]["queue_depth"] == 7
    assert by_unit["unit-0001"]["policy_version"] == 4
    assert by_unit["unit-0002"]["state"] == "offline"


def test_acl_layout_each_destination_reads_only_its_own_topic(tmp_path, broker_factory):
    """The ACL of docs/receiver.md on a real broker: the county's receiver asks for the state
    police's topic too, and gets none of its reads (had one arrived, the receiver would
    have counted it as wrong_destination)."""
    acl = ("user unit-0001\ntopic write plategate/+/reads\ntopic write plategate/unit-0001/#\n\n"
           "user county-rx\ntopic read plategate/county/reads\ntopic read plategate/+/status\n"
           "topic read plategate/+/heartbeat\n")
    broker = broker_factory(passwords={"unit-0001": "pw-unit", "county-rx": "pw-county"}, acl=acl)
    unit = new_unit("unit-0001")
    db = tmp_path / "rx.sqlite"
    config = write_config(tmp_path / "rx.toml", broker, client_id="rx-1",
                          topics=["plategate/county/reads", "plategate/state-police/reads"],
                          destinations=["county", "state-police"], sqlite=db,
                          extra_broker='username = "county-rx"\npassword = "pw-county"')
    register(config, unit, tmp_path)
    rx = ThreadedReceiver(config).start()
    try:
        publisher = Publisher(broker, username="unit-0001", password="pw-unit")
        publisher.publish("plategate/state-police/reads",
                          [genuine(unit, "state-police", i, prefix="p") for i in range(20)])
        publisher.publish("plategate/county/reads", [genuine(unit, "county", 1)])
        publisher.close()
        assert wait_until(lambda: "r00000001" in rx.store.read_ids(), 30)
        assert rx.store.read_ids() == {"r00000001"}
        assert rx.store.counts() == {"stored": 1}
    finally:
        rx.close()


def test_retired_receiver_leaves_the_share_group(tmp_path, mosquitto):
    """While a receiver's session exists the broker keeps assigning it reads even when it is
    down; `--retire` stores what it holds and ends the session, so the rest go elsewhere."""
    unit = new_unit("unit-0001")
    dbs, configs = receiver_pair(tmp_path, mosquitto, unit)
    rxs = [ThreadedReceiver(c).start() for c in configs]
    publisher = Publisher(mosquitto)
    try:
        prime(publisher, unit, dbs)
        rxs[1].close()                          # down, session kept: still gets its share
        publisher.publish(TOPIC, [genuine(unit, "county", i, prefix="a") for i in range(100)])
        assert wait_until(lambda: len([i for i in stored_ids(dbs[0]) if i.startswith("a")]) >= 30, 30)
        retired = plategate("receive", "--retire", "--config", str(configs[1]))
        assert retired.returncode == 0, retired.stderr
        first = {f"a{i:08d}" for i in range(100)}
        assert first <= stored_ids(dbs[0]) | stored_ids(dbs[1]), "a read was lost by retiring"
        held = stored_ids(dbs[1])
        assert {i for i in held if i.startswith("a")}, "the broker assigned the down receiver nothing"
        publisher.publish(TOPIC, [genuine(unit, "county", i, prefix="b") for i in range(100)])
        assert wait_until(lambda: {f"b{i:08d}" for i in range(100)} <= stored_ids(dbs[0]), 30)
        assert stored_ids(dbs[1]) == held
    finally:
        publisher.close()
        rxs[0].close()
