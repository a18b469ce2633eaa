"""The technician's serial console end to end: the real agent, the real console process, a pty
cable with pyserial on both ends, a real broker (issue 18's acceptance).
"""
from __future__ import annotations

import logging
import time
import tomllib

import cv2
import numpy as np
import pytest

from console_rig import PASSWORD, Bench, running_bench, signed_policy
from agent.console.client import download

pytestmark = pytest.mark.integration


@pytest.fixture
def bench(tmp_path, mosquitto, dept):
    with running_bench(tmp_path, mosquitto, dept) as bench:
        yield bench


def _status_url(bench: Bench) -> str:
    return tomllib.loads(bench.config_path.read_text())["mqtt"]["status"]["url"]


def test_login_change_broker_apply_rollback_snapshot_and_signed_policy(bench, dept, mosquitto):
    client = bench.client("tech-7")  # first login on a unit without a password sets it
    bench.wait_audit("console.password_set", lambda r: r["fields"]["technician"] == "tech-7")
    bench.wait_audit("console.login")
    assert PASSWORD not in bench.config_path.read_text()
    assert "scrypt$" in bench.config_path.read_text()

    # change the status broker's address, review, apply
    old_url = _status_url(bench)
    new_url = "mqtt://127.0.0.1:18830"
    assert client.link.request(f"config set mqtt.status.url {new_url}")["ok"]
    diff = client.link.request("config diff")
    assert diff["changes"] == [{"key": "mqtt.status.url", "old": old_url, "new": new_url}]
    applied = client.link.request("config apply")
    assert applied["ok"], applied
    assert applied["keys"] == ["mqtt.status.url"] and applied["reloaded"] is True
    assert _status_url(bench) == new_url
    record = bench.wait_audit("console.config_applied", lambda r: not r["fields"]["rollback"])
    assert record["fields"]["technician"] == "tech-7" and record["fields"]["keys"] == ["mqtt.status.url"]
    bench.wait_audit("config.changed", lambda r: "mqtt" in r["fields"]["sections"])  # the agent reloaded

    # roll back
    rolled = client.link.request("config rollback")
    assert rolled["ok"] and rolled["keys"] == ["mqtt.status.url"], rolled
    assert _status_url(bench) == old_url
    bench.wait_audit("console.config_applied", lambda r: r["fields"]["rollback"])

    # a snapshot that decodes as an image
    offer = client.link.request("camera snapshot")
    assert offer["ok"], offer
    jpeg = download(client.link, offer["transfer"], offer["size"], offer["sha256"])
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] == 640

    # install a signed policy, newer than the running one
    bundle = bench.tmp / "policy-v2.bundle"
    bundle.write_bytes(signed_policy(dept, 2, mosquitto))
    assert client.install("policy", bundle, as_json=False) == 0
    assert bench.agent.pipeline.policies.active(_now()).version == 2
    bench.wait_audit("policy.installed", lambda r: r["fields"]["source"] == "console:tech-7")

    # a tampered bundle is refused with the agent's reason, and the policy stays as it was
    tampered = bytearray(signed_policy(dept, 3, mosquitto))
    at = tampered.index(b'"version":3') if b'"version":3' in tampered else len(tampered) // 2
    tampered[at + 10] ^= 0x01
    bad = bench.tmp / "policy-v3-tampered.bundle"
    bad.write_bytes(bytes(tampered))
    transfer = _upload(client, bytes(tampered))
    reply = client.link.request(f"policy install {transfer}")
    assert not reply["ok"]
    assert reply["reason"] in ("bad_signature", "bad_format", "invalid_json"), reply
    assert reply["error"].startswith(f"refused ({reply['reason']})")
    assert bench.agent.pipeline.policies.active(_now()).version == 2
    bench.wait_audit("policy.refused", lambda r: r["fields"]["source"] == "console:tech-7")


def _upload(client, data: bytes) -> str:
    from agent.console.client import upload
    return upload(client.link, data)


def _now() -> float:
    return time.time()


def test_policy_keys_and_stored_reads_are_refused_and_audited(bench):
    client = bench.client("tech-8")
    before = bench.config_path.read_text()
    for key, value in (("policy.trusted_keys", '["/tmp/evil.pub"]'), ("policy.bundle", "/tmp/wide.bundle"),
                       ("policy.hotlists", '["/tmp/list.bundle"]'), ("delivery.allow_plaintext_loopback", "true"),
                       ("audit.unit_key", "/tmp/k.pem")):
        reply = client.link.request(f"config set {key} '{value}'")
        assert not reply["ok"] and reply["reason"] in ("policy_key", "not_device_setting"), reply
        assert key in reply["error"]
        bench.wait_audit("console.refused", lambda r, k=key: r["fields"].get("key") == k
                         and r["fields"]["technician"] == "tech-8")
    assert bench.wait_audit("console.refused", lambda r: r["fields"].get("key") == "policy.trusted_keys")[
        "fields"]["reason"] == "policy_key"
    for word in ("reads", "plates", "export"):
        reply = client.link.request(word)
        assert not reply["ok"] and reply["reason"] == "stored_reads", reply
    bench.wait_audit("console.refused", lambda r: r["fields"]["reason"] == "stored_reads")
    assert bench.config_path.read_text() == before
    # the audit tail shows counts and reasons, never plate text (wait for the agent's first
    # accepted read: a pass is emitted only when it ends)
    bench.wait_audit("read.accepted", timeout=60.0)
    tail = client.link.request("audit tail 5000")
    assert tail["ok"] and tail["events"].get("read.accepted", 0) > 0
    text = repr(tail)
    from helpers.pipeline import PLATES
    assert not any(plate in text for plate in PLATES)


def test_lockout_holds_across_console_restart(bench):
    client = bench.client("tech-1")  # sets the password
    client.link.request("logout")
    for attempt in range(3):
        reply = client.link.request("login intruder")
        while not reply["ok"] and reply.get("reason") == "locked":
            # the growing delay after a failure (2 s, 4 s): wait it out as an attacker would
            assert reply["retry_after_s"] <= 4, reply
            time.sleep(reply["retry_after_s"] + 0.2)
            reply = client.link.request("login intruder")
        assert reply.get("need") == "password", reply
        reply = client.link.request("wrong password guess", secret=True)
        assert not reply["ok"]
    assert reply["reason"] == "locked" and "15 min" in reply["error"], reply
    assert len(bench.audit_records("console.login_failed")) == 3

    client.link.port.close()
    bench.stop_console()
    bench.start_console()
    client = bench.client("tech-1", login=False)
    reply = client.link.request("login tech-1")
    assert not reply["ok"] and reply["reason"] == "locked", reply
    assert reply["retry_after_s"] > 800
    who = client.link.request("whoami")
    assert who["technician"] is None and who["locked_for_s"] > 800


def test_status_camera_mqtt_policy_logs_and_time(bench, caplog):
    caplog.set_level(logging.INFO)  # as `plategate run` configures it
    client = bench.client("tech-9")
    status = client.link.request("status")
    assert status["ok"] and status["policy"]["version"] == 1 and status["models"]
    assert status["last_read_at"] and status["clock"]["now"] and status["queue_depth"]["frames"] >= 0
    test = client.link.request("camera test 2", timeout_s=30)
    assert test["ok"] and test["fps"] > 0 and test["frames_checked"] > 0 and test["brightness"] > 0
    assert test["plates_live"], test  # the scripted plates, seen live during the test only
    mqtt = client.link.request("mqtt test", timeout_s=30)
    assert mqtt["ok"], mqtt
    assert {r["destination"]: r["result"] for r in mqtt["results"]} == {"county": "ok", "status": "ok"}
    shown = client.link.request("policy show")
    assert shown["policy"]["destinations"][0]["id"] == "county"
    logs = client.link.request("log tail 20")
    assert logs["ok"] and any("link connected dest=county" in line for line in logs["lines"]), logs
    assert client.link.request("time show")["ok"]
    network = client.link.request("network show")
    assert network["ok"] or network["reason"] == "unsupported", network
    assert client.link.request("time set yesterday")["reason"] == "usage"
    assert client.link.request("help")["commands"]
    restart = client.link.request("restart")
    assert restart["ok"], restart
    bench.thread.join(10)
    assert not bench.thread.is_alive() and bench.exit_code == 75  # for systemd to start it again
    bench.wait_audit("console.restart", lambda r: r["fields"]["technician"] == "tech-9")


def test_expired_rolled_back_bundles_refused_and_a_signed_hotlist_installed(bench, dept, mosquitto):
    from agent.policy.hotlist import sign_hotlist
    from agent.policy.schema import format_time

    client = bench.client("tech-10")
    again = _upload(client, signed_policy(dept, 1, mosquitto))  # the running version: a rollback
    reply = client.link.request(f"policy install {again}")
    assert not reply["ok"] and reply["reason"] == "rollback", reply
    expired = signed_policy(dept, 5, mosquitto, now=time.time() - 40 * 86400)
    reply = client.link.request(f"policy install {_upload(client, expired)}")
    assert not reply["ok"] and reply["reason"] == "expired", reply
    assert bench.agent.pipeline.policies.active(_now()).version == 1
    doc = {"schema": "plategate.hotlist/1", "list_id": "ct-stolen", "version": 1, "source": "CT DESPP",
           "purpose": "stolen_vehicle", "issued_at": format_time(time.time() - 60), "max_staleness_hours": 24,
           "plates": ["ABC-1234"]}
    reply = client.link.request(f"hotlist install {_upload(client, sign_hotlist(doc, dept))}")
    assert reply["ok"] and reply["list_id"] == "ct-stolen", reply
    bench.wait_audit("hotlist.installed", lambda r: r["fields"]["source"] == "console:tech-10")


def test_mqtt_test_checks_each_destinations_tls_identity(bench, dept, mosquitto, tls_broker_factory):
    from helpers.soak import destination_doc, policy_doc
    from agent.policy.bundle import sign_bundle

    good, impostor = tls_broker_factory(), tls_broker_factory()
    pin = good.tls.server_key_sha256
    doc = policy_doc(2, [destination_doc("county", mosquitto.url, "county/reads", pin=mosquitto.pin),
                         destination_doc("state", good.url, "state/reads", pin=pin),
                         destination_doc("state-copy", impostor.url, "state/reads", pin=pin)], time.time())
    client = bench.client("tech-12")
    assert client.link.request(f"policy install {_upload(client, sign_bundle(doc, dept))}")["ok"]
    reply = client.link.request("mqtt test", timeout_s=60)
    results = {r["destination"]: r for r in reply["results"]}
    assert results["county"]["result"] == "ok" and results["status"]["result"] == "ok"
    assert results["state"]["result"] == "ok" and results["state"]["peer_key_sha256"] == pin
    assert results["state"]["identity"] == "key pin"
    assert results["state-copy"]["result"] == "identity_failed", results["state-copy"]
    assert not reply["ok"] and reply["reason"] == "mqtt_failed"
