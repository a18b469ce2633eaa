"""Key rotation by SIGHUP (issue 14, items 3 and 4).

Regression: a reload logged `reload done sections=policy` but kept the trusted keys and HMAC
keys loaded at start, so a policy signed with a newly trusted department key was refused
`unknown_signer` and a rotated HMAC key was never used. The agent runs in-process with the
scripted recognizer of test_pipeline; `request_reload()` is what its SIGHUP handler calls.
"""
from __future__ import annotations

import json
from functools import partial
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.records import expanded_records
from agent.config.loader import load_config
from agent.delivery.service import wait_until as _wait_until
from helpers.soak import destination_doc, make_read, policy_doc
from agent.policy.bundle import sign_bundle
from agent.policy.errors import PolicyError
from agent.policy.keyring import hmac_key_id
from agent.policy.minimise import plate_hmac
from agent.policy.signing import key_id, write_keypair
from agent.runtime.agent import Agent
from helpers.pipeline import PLATES, ScriptedRecognizer, make_config

pytestmark = pytest.mark.integration
wait_until = partial(_wait_until, timeout=30.0)
KEY_A, KEY_B = b"A" * 32, b"B" * 32


class Unit:
    """An agent with a rewritable config: trusted key files, bundle and HMAC key file."""

    def __init__(self, tmp_path: Path, broker) -> None:
        self.tmp = tmp_path
        self.old = Ed25519PrivateKey.generate()
        self.new = Ed25519PrivateKey.generate()
        self.old_key, self.old_pub = write_keypair(tmp_path / "dept-old", self.old)
        self.new_key, self.new_pub = write_keypair(tmp_path / "dept-new", self.new)
        self.bundle = tmp_path / "policy.bundle"
        self.hmac = tmp_path / "hmac.toml"
        self.dest = destination_doc("state", broker.url, "pg/state/reads", pin=broker.pin,
                                    fields=["plate", "timestamp"], plate_form="hmac_sha256")
        self.write(1, self.old, [self.old_pub], KEY_A)
        self.config = make_config(tmp_path, self.policy_toml([self.old_pub]))
        self.agent = Agent(self.config, load_config(self.config), recognizer=ScriptedRecognizer())
        self.codes: list[int] = []
        self.thread = threading.Thread(target=lambda: self.codes.append(self.agent.run()))

    def policy_toml(self, trusted: list[Path], hmac: Path | None = None) -> str:
        keys = ", ".join(f'"{p}"' for p in trusted)
        return (f'[policy]\nbundle = "{self.bundle}"\ntrusted_keys = [{keys}]\n'
                f'hmac_keys = "{hmac or self.hmac}"\n')

    def write(self, version: int, signer, trusted: list[Path], hmac_key: bytes | None = None,
              hmac_path: Path | None = None) -> None:
        self.bundle.write_bytes(sign_bundle(policy_doc(version, [self.dest], time.time()), signer))
        if hmac_key is not None:
            self.hmac.write_text(f'state = "{hmac_key.hex()}"\n')
        if hasattr(self, "config"):
            text = self.config.read_text()
            self.config.write_text(text[:text.index("[policy]")] + self.policy_toml(trusted, hmac_path))

    def reload(self) -> None:
        before = len(self.records("config.changed")) + len(self.records("config.refused"))
        self.agent.request_reload()
        assert wait_until(lambda: len(self.records("config.changed")) + len(self.records("config.refused"))
                          > before), "reload did not finish"

    def records(self, event: str) -> list[dict]:
        if self.agent.pipeline is None:
            return []
        self.agent.pipeline.audit.flush()
        return [r["fields"] for r in expanded_records(self.agent.pipeline.audit.path, event)]

    def active(self):
        return self.agent.pipeline.policies.active(time.time())


@pytest.fixture
def unit(tmp_path, broker_factory):
    broker = broker_factory()
    u = Unit(tmp_path, broker)
    u.broker = broker
    u.thread.start()
    yield u
    u.agent.request_stop()
    u.thread.join(15)


def hashes(collector) -> set[str]:
    return {json.loads(m.payload)["read"]["plate_hmac"] for m in collector.snapshot()}


def test_sighup_rotates_department_key_and_hmac_key(unit, collector_factory):
    sub = collector_factory(unit.broker)
    assert wait_until(lambda: unit.agent.pipeline is not None and unit.active() is not None)
    assert wait_until(lambda: hashes(sub) >= {plate_hmac(p, KEY_A) for p in PLATES})

    # The department rotates: a new signing key (the old one withdrawn) and a new HMAC key.
    unit.write(2, unit.new, [unit.new_pub], KEY_B)
    unit.reload()
    policy = unit.active()
    assert (policy.version, policy.signer_key_id) == (2, key_id(unit.new.public_key()))
    loaded = [r for r in unit.records("keys.loaded") if r["source"] == "reload"]
    assert loaded[-1]["trusted"] == [key_id(unit.new.public_key())]
    assert loaded[-1]["hmac"] == {"state": hmac_key_id(KEY_B)}
    assert KEY_B.hex() not in unit.agent.pipeline.audit.path.read_text()    # ids only, never keys

    now = time.time()
    unit.agent.pipeline.outbox.accept([make_read(i, now, prefix="n") for i in range(3)], now)
    new_hashes = {plate_hmac(make_read(i, now).plate, KEY_B) for i in range(3)}
    assert wait_until(lambda: hashes(sub) >= new_hashes)
    # The withdrawn key signs nothing any more.
    with pytest.raises(PolicyError) as info:
        unit.agent.pipeline.policies.install(sign_bundle(policy_doc(3, [unit.dest], time.time()), unit.old),
                                             time.time(), "test")
    assert info.value.reason == "unknown_signer"


@pytest.mark.parametrize("bad", ["private-key", "missing-key", "missing-hmac"])
def test_reload_with_an_unusable_key_file_is_refused_whole(unit, bad):
    assert wait_until(lambda: unit.agent.pipeline is not None and unit.active() is not None)
    unit.write(2, unit.new, [unit.new_pub], KEY_B)
    unit.reload()
    assert unit.active().version == 2
    running_keys = dict(unit.agent.pipeline.outbox.hmac_keys)

    # A reload naming the old PRIVATE key as trusted / a missing file: refused as a whole.
    trusted, hmac_path, named = [unit.new_pub], None, None
    if bad == "private-key":
        trusted, named = [unit.new_pub, unit.old_key], unit.old_key
    elif bad == "missing-key":
        trusted, named = [unit.new_pub, unit.tmp / "gone.pub"], unit.tmp / "gone.pub"
    else:
        hmac_path = named = unit.tmp / "gone.toml"
    unit.write(3, unit.old, trusted, hmac_path=hmac_path)   # signed by the key it tries to add
    unit.reload()
    (refused,) = unit.records("config.refused")
    assert str(named) in refused["problems"][0]
    if bad == "private-key":
        assert "a unit must hold only the public key" in refused["problems"][0]
    assert unit.active().version == 2                       # the bundle it named was not installed
    assert unit.agent.pipeline.outbox.hmac_keys == running_keys
    # The running keys are kept: the new key still signs, the old one still does not.
    store = unit.agent.pipeline.policies
    with pytest.raises(PolicyError) as info:
        store.install(unit.bundle.read_bytes(), time.time(), "test")
    assert info.value.reason == "unknown_signer"
    assert store.install(sign_bundle(policy_doc(4, [unit.dest], time.time()), unit.new),
                         time.time(), "test").version == 4


def test_real_process_sighup_adds_a_trusted_key_and_refuses_a_private_one(tmp_path):
    """The acceptance line, on `python -m agent run` itself with a real SIGHUP: a reload that
    adds a trusted key installs a policy signed with it; one naming a private key as trusted
    is refused and the running keys are kept."""
    import signal

    from helpers.agent_process import AgentProcess, write_config
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    _, old_pub = write_keypair(tmp_path / "old", old)
    new_key, new_pub = write_keypair(tmp_path / "new", new)
    bundle = tmp_path / "policy.bundle"
    dest = destination_doc("county", "mqtts://127.0.0.1:1", "pg/county", pin="0" * 64)
    bundle.write_bytes(sign_bundle(policy_doc(1, [dest], time.time()), old))

    def policy_section(*trusted: Path) -> str:
        return f'[policy]\nbundle = "{bundle}"\ntrusted_keys = [{", ".join(repr(str(p)) for p in trusted)}]\n'

    config = write_config(tmp_path, extra=policy_section(old_pub))
    base = config.read_text()[:config.read_text().index("[policy]")]
    agent = AgentProcess(config)
    try:
        agent.wait_for("policy installed version=1")
        bundle.write_bytes(sign_bundle(policy_doc(2, [dest], time.time()), new))
        config.write_text(base + policy_section(old_pub, new_pub))
        agent.proc.send_signal(signal.SIGHUP)
        assert f"signer={key_id(new.public_key())}" in agent.wait_for("policy installed version=2")

        bundle.write_bytes(sign_bundle(policy_doc(3, [dest], time.time()), new))
        config.write_text(base + policy_section(old_pub, new_key))
        agent.proc.send_signal(signal.SIGHUP)
        line = agent.wait_for("problem=")
        assert str(new_key) in line and "a unit must hold only the public key" in line
        assert agent.proc.poll() is None
        records = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
        reloaded = [r["fields"] for r in records if r["event"] == "keys.loaded" and r["fields"]["source"] == "reload"]
        assert reloaded[-1]["trusted"] == sorted([key_id(old.public_key()), key_id(new.public_key())])
        assert not any("version=3" in x for x in agent.lines)        # the bundle it named: not installed
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=10) == 0
    finally:
        agent.stop()
