"""PolicyStore: install, persist, reboot, no rollback, fail closed, audited, subscribers told."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agent.audit.log import AuditLog
from agent.policy.bundle import PolicyError, sign_bundle
from agent.policy.store import PolicyStore

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
NOW = 1_800_000_000.0


def bundle(dept, version: int, expires: str = "2036-01-01T00:00:00Z", **changes) -> bytes:
    doc = json.loads((POLICIES / "demo.json").read_text())
    doc["version"] = version
    doc["expires_at"] = expires
    doc.update(changes)
    return sign_bundle(doc, dept)


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def audit(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    yield log
    log.close()


def test_install_activate_persist_and_reload(tmp_path, trusted, dept, audit) -> None:
    store = PolicyStore(tmp_path / "state", trusted, audit)
    assert store.active(NOW) is None
    policy = store.install(bundle(dept, 3), NOW, "test")
    assert store.active(NOW) == policy
    rebooted = PolicyStore(tmp_path / "state", trusted, audit)
    assert rebooted.active(NOW) is None
    assert rebooted.load_persisted(NOW) == policy
    assert rebooted.active(NOW) == policy
    audit.flush()
    kinds = [e["event"] for e in events(audit.path)]
    assert kinds.count("policy.installed") == 2


def test_refusal_keeps_last_good_policy_and_is_audited(tmp_path, trusted, dept, audit) -> None:
    store = PolicyStore(tmp_path / "state", trusted, audit)
    good = store.install(bundle(dept, 2), NOW, "test")
    tampered = bytearray(bundle(dept, 5))
    tampered[120] ^= 0x01
    with pytest.raises(PolicyError):
        store.install(bytes(tampered), NOW, "mqtt:policy")
    with pytest.raises(PolicyError) as info:
        store.install(bundle(dept, 1), NOW, "serial")
    assert info.value.reason == "rollback"
    assert store.active(NOW) == good
    audit.flush()
    refusals = [e["fields"] for e in events(audit.path) if e["event"] == "policy.refused"]
    assert [r["source"] for r in refusals] == ["mqtt:policy", "serial"]
    assert refusals[1]["reason"] == "rollback"
    assert (tmp_path / "state" / "policy.bundle").read_bytes() == bundle(dept, 2)


def test_rollback_refused_across_reboot_even_if_bundle_file_replaced(tmp_path, trusted, dept, audit) -> None:
    """Bug pinned: a reboot (or swapping the persisted bundle) must not bring an older policy back."""
    state = tmp_path / "state"
    store = PolicyStore(state, trusted, audit)
    store.install(bundle(dept, 1), NOW, "test")
    store.install(bundle(dept, 4), NOW, "test")
    (state / "policy.bundle").write_bytes(bundle(dept, 1))  # attacker restores v1
    rebooted = PolicyStore(state, trusted, audit)
    assert rebooted.load_persisted(NOW) is None
    assert rebooted.active(NOW) is None
    with pytest.raises(PolicyError, match="rollback"):
        rebooted.install(bundle(dept, 3), NOW, "test")
    assert rebooted.install(bundle(dept, 5), NOW, "test").version == 5


def test_expiry_fails_closed_and_notifies(tmp_path, trusted, dept, audit) -> None:
    store = PolicyStore(tmp_path / "state", trusted, audit)
    seen = []
    store.subscribe(seen.append)
    policy = store.install(bundle(dept, 1, expires="2027-01-16T00:00:00Z"), NOW, "test")
    assert seen == [policy]
    assert store.active(policy.expires_at - 1) == policy
    assert store.active(policy.expires_at) is None
    assert store.active(policy.expires_at + 10) is None
    assert seen == [policy, None]  # told once
    audit.flush()
    assert [e["event"] for e in events(audit.path)].count("policy.expired") == 1
    # an expired persisted policy is not loaded after a reboot
    assert PolicyStore(tmp_path / "state", trusted, audit).load_persisted(policy.expires_at + 1) is None


def test_no_persisted_policy(tmp_path, trusted, audit) -> None:
    assert PolicyStore(tmp_path / "state", trusted, audit).load_persisted(NOW) is None


def test_subscriber_exception_does_not_undo_install(tmp_path, trusted, dept, audit) -> None:
    store = PolicyStore(tmp_path / "state", trusted, audit)
    store.subscribe(lambda p: 1 / 0)
    assert store.install(bundle(dept, 1), NOW, "test").version == 1
    assert store.active(NOW) is not None


def test_concurrent_installs_never_activate_two_of_the_same_version(tmp_path, trusted, dept, audit) -> None:
    store = PolicyStore(tmp_path / "state", trusted, audit)
    data = [bundle(dept, v) for v in range(1, 9)]
    results = []

    def worker(b):
        try:
            results.append(store.install(b, NOW, "t").version)
        except PolicyError:
            results.append(None)

    threads = [threading.Thread(target=worker, args=(b,)) for b in data for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    installed = [v for v in results if v is not None]
    audit.flush()
    audited = [e["fields"]["version"] for e in events(audit.path) if e["event"] == "policy.installed"]
    assert len(audited) == len(set(audited)) and audited == sorted(audited)  # each version once, never back
    assert store.active(NOW).version == max(installed) == store.highwater() == audited[-1]


def test_reinstalling_the_active_bundle_is_a_no_op(tmp_path, trusted, dept, audit) -> None:
    """A retained MQTT policy message re-delivered on reconnect is neither refused nor re-audited."""
    store = PolicyStore(tmp_path / "state", trusted, audit)
    data = bundle(dept, 2)
    first = store.install(data, NOW, "mqtt")
    assert store.install(data, NOW + 60, "mqtt") is first
    audit.flush()
    kinds = [e["event"] for e in events(audit.path)]
    assert kinds == ["policy.installed"]
    # but an older one is still a refused replay
    with pytest.raises(PolicyError, match="rollback"):
        store.install(bundle(dept, 1), NOW, "mqtt")


def test_same_bundle_from_config_after_reboot_is_accepted(tmp_path, trusted, dept, audit) -> None:
    """Bug pinned: the configured bundle offered again at boot must not be refused as a rollback."""
    data = bundle(dept, 3)
    PolicyStore(tmp_path / "state", trusted, audit).install(data, NOW, "config")
    rebooted = PolicyStore(tmp_path / "state", trusted, audit)
    assert rebooted.install(data, NOW + 60, "config").version == 3
    with pytest.raises(PolicyError, match="rollback"):
        PolicyStore(tmp_path / "state", trusted, audit).install(bundle(dept, 2), NOW, "config")
