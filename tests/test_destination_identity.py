"""Destination identity cannot be configured away (issue 14, items 1 and 4).

Regression: a signed policy whose destination used plain mqtt:// with no key pin to a
remote address was signed by `policy sign`, passed `policy verify` and was installed by the
agent, which then sent every read in clear text to an unchecked broker. And a department's
PRIVATE key listed as trusted was accepted (its public half was used).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from agent.audit.records import expanded_records
from agent.cli import main
from agent.config.loader import load_config
from helpers.soak import build_stack, destination_doc, make_read, policy_doc
from agent.policy.bundle import PolicyError, load_bundle, sign_bundle
from agent.policy.signing import load_trusted_keys
from agent.runtime.pipeline import build_pipeline
from helpers.pipeline import ScriptedRecognizer, make_config

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
KEYS = POLICIES / "test-keys"
DEPT_KEY = str(KEYS / "department-TEST-ONLY.key")
DEPT_PUB = str(KEYS / "department-TEST-ONLY.pub")
NOW_ISO = "2027-01-15T08:00:00Z"
NOW = 1_800_000_000.0


def with_transport(**transport) -> dict:
    doc = json.loads((POLICIES / "ct-trust-act.json").read_text())
    doc["destinations"][0]["transport"] = {"topic": "pg/own/reads", **transport}
    return doc


PLAIN_REMOTE = dict(broker_url="mqtt://192.0.2.10:1883", server_key_sha256=None)
PLAIN_LOOPBACK = dict(broker_url="mqtt://127.0.0.1:1883")


def test_policy_sign_refuses_plain_mqtt_to_a_remote_broker(tmp_path, capsys) -> None:
    src = tmp_path / "plain.json"
    src.write_text(json.dumps(with_transport(**PLAIN_REMOTE)))
    out = tmp_path / "plain.bundle"
    assert main(["policy", "sign", str(src), "--key", DEPT_KEY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "destinations[0].transport: mqtt://192.0.2.10:1883 is plain MQTT to 192.0.2.10" in err
    assert not out.exists()


@pytest.mark.parametrize("transport, why", [
    (PLAIN_REMOTE, "is plain MQTT to 192.0.2.10"),
    (dict(broker_url="mqtts://broker.example.gov:8883"), "no server identity: server_key_sha256"),
    (dict(broker_url="mqtts://broker.example.gov:8883", ca_pem="-----BEGIN CERTIFICATE-----\nx\n"),
     "server_key_sha256 (the SHA-256 of the broker's SubjectPublicKeyInfo) is required besides ca_pem"),
    (dict(broker_url="mqtt://127.0.0.1:1883", server_key_sha256="ab" * 32), "need mqtts://"),
    (dict(broker_url="mqtt://localhost:1883"), "is plain MQTT to localhost"),
])
def test_verify_check_and_agent_refuse_a_bundle_signed_by_other_means(tmp_path, capsys, dept, trusted,
                                                                      transport, why) -> None:
    """Signed with the library directly (validate=False), as a careless tool would."""
    bundle = tmp_path / "p.bundle"
    bundle.write_bytes(sign_bundle(with_transport(**transport), dept, validate=False))
    assert main(["policy", "verify", str(bundle), "--trusted", DEPT_PUB, "--now", NOW_ISO]) == 2
    err = capsys.readouterr().err
    assert "REFUSED (schema)" in err and "destinations[0].transport: " in err and why in err
    assert main(["policy", "check", str(bundle), "--now", NOW_ISO]) == 2
    assert "error: destinations[0].transport: " in capsys.readouterr().out
    with pytest.raises(PolicyError) as info:
        load_bundle(bundle.read_bytes(), trusted, NOW, None, allow_plaintext_loopback=True)
    assert info.value.reason == "schema" and why in str(info.value)


def test_the_agent_refuses_it_at_start(tmp_path, dept) -> None:
    bundle = tmp_path / "p.bundle"
    bundle.write_bytes(sign_bundle(with_transport(**PLAIN_REMOTE), dept, validate=False))
    config = load_config(make_config(tmp_path, f'[policy]\nbundle = "{bundle}"\ntrusted_keys = ["{DEPT_PUB}"]\n'))
    pipeline = build_pipeline(config, recognizer=ScriptedRecognizer())
    try:
        assert pipeline.policies.active(time.time()) is None
        pipeline.audit.flush()
        (refusal,) = expanded_records(pipeline.audit.path, "policy.refused")
        assert "destinations[0].transport: mqtt://192.0.2.10:1883 is plain MQTT" in refusal["fields"]["detail"]
    finally:
        pipeline.outbox.close()
        pipeline.audit.close()


def test_plain_loopback_needs_the_device_opt_in(tmp_path, capsys, dept, trusted) -> None:
    doc = with_transport(**PLAIN_LOOPBACK)
    bundle = tmp_path / "p.bundle"
    bundle.write_bytes(sign_bundle(doc, dept))       # the schema allows it: loopback only
    with pytest.raises(PolicyError) as info:
        load_bundle(bundle.read_bytes(), trusted, NOW, None)
    assert info.value.reason == "insecure_transport"
    assert "destinations[0].transport: mqtt://127.0.0.1:1883 is plain MQTT" in info.value.detail
    assert "[delivery] allow_plaintext_loopback = true" in info.value.detail
    assert load_bundle(bundle.read_bytes(), trusted, NOW, None, allow_plaintext_loopback=True).version == 1
    assert main(["policy", "verify", str(bundle), "--trusted", DEPT_PUB, "--now", NOW_ISO]) == 2
    assert "REFUSED (insecure_transport)" in capsys.readouterr().err
    assert main(["policy", "check", str(bundle), "--now", NOW_ISO, "--strict"]) == 2
    assert "allow_plaintext_loopback" in capsys.readouterr().out


def test_opted_in_unit_warns_audits_and_installs(tmp_path, dept, caplog) -> None:
    doc = with_transport(**PLAIN_LOOPBACK)
    doc["expires_at"] = "2099-01-01T00:00:00Z"
    bundle = tmp_path / "p.bundle"
    bundle.write_bytes(sign_bundle(doc, dept))
    policy_toml = f'[policy]\nbundle = "{bundle}"\ntrusted_keys = ["{DEPT_PUB}"]\n'
    caplog.set_level(logging.WARNING)
    opted = load_config(make_config(tmp_path, policy_toml + "[delivery]\nallow_plaintext_loopback = true\n"))
    pipeline = build_pipeline(opted, recognizer=ScriptedRecognizer())
    try:
        assert pipeline.policies.active(time.time()).version == 1
        pipeline.audit.flush()
        assert expanded_records(pipeline.audit.path, "delivery.plaintext_allowed")
        assert any(r.levelno == logging.WARNING and "allow_plaintext_loopback = true" in r.getMessage()
                   for r in caplog.records)
    finally:
        pipeline.outbox.close()
        pipeline.audit.close()


@pytest.mark.integration
def test_opted_in_plain_loopback_delivers(tmp_path, broker_factory, collector_factory) -> None:
    """The opt-in really works end to end (a plain listener on 127.0.0.1)."""
    broker = broker_factory(plain=True)
    assert broker.url.startswith("mqtt://") and broker.pin is None
    sub = collector_factory(broker)
    stack = build_stack(tmp_path / "unit")
    stack.rig.store.allow_plaintext_loopback = True
    try:
        stack.rig.install(policy_doc(1, [destination_doc("city", broker.url, "pg/city/reads")], time.time()))
        stack.service.start()
        now = time.time()
        stack.outbox.accept([make_read(i, now) for i in range(3)], now)
        assert sub.wait_count(3, timeout=30)
    finally:
        stack.close()


# --- item 4: a private key is never a trusted key ------------------------------------------------

def test_private_key_listed_as_trusted_is_refused(capsys, tmp_path) -> None:
    with pytest.raises(PolicyError) as info:
        load_trusted_keys([Path(DEPT_PUB), Path(DEPT_KEY)])
    assert info.value.reason == "bad_key"
    assert DEPT_KEY in info.value.detail and "a unit must hold only the public key" in info.value.detail
    bundle = POLICIES / "ct-trust-act.bundle"
    assert main(["policy", "verify", str(bundle), "--trusted", DEPT_KEY, "--now", NOW_ISO]) == 2
    err = capsys.readouterr().err
    assert "PRIVATE key; a unit must hold only the public key" in err and DEPT_KEY in err
    missing = tmp_path / "nope.pub"
    assert main(["policy", "verify", str(bundle), "--trusted", str(missing), "--now", NOW_ISO]) == 2
    assert f"{missing}: cannot read the key file" in capsys.readouterr().err
