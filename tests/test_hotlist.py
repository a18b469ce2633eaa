"""Hotlists: signed, versioned, normalised matching, stale lists stop matching and alert once."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.audit.log import AuditLog
from agent.policy.errors import PolicyError
from agent.policy.hotlist import HotlistStore, sign_hotlist
from agent.policy.signing import load_private_key
from agent.reads import HotlistHit

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
ISSUED = 1_800_000_000.0


def hotlist(dept, version=1, list_id="ct-stolen", purpose="stolen_vehicle", hours=24, plates=("ABC-1234", "xy 99")):
    doc = {"schema": "plategate.hotlist/1", "list_id": list_id, "version": version, "source": "CT DESPP",
           "purpose": purpose, "issued_at": "2027-01-15T08:00:00Z", "max_staleness_hours": hours,
           "plates": list(plates)}
    return sign_hotlist(doc, dept)


@pytest.fixture()
def audit(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    yield log
    log.close()


def events(audit) -> list[dict]:
    audit.flush()
    return [json.loads(line) for line in audit.path.read_text().splitlines()]


def test_install_and_match_normalised(tmp_path, dept, trusted, audit) -> None:
    store = HotlistStore(tmp_path, trusted, audit)
    store.install(hotlist(dept), ISSUED, "test")
    hit = HotlistHit("ct-stolen", 1, "stolen_vehicle", "CT DESPP")
    assert store.match("abc1234", ISSUED + 60) == (hit,)
    assert store.match("XY-99", ISSUED + 60) == (HotlistHit("ct-stolen", 1, "stolen_vehicle", "CT DESPP"),)
    assert store.match("ZZZ999", ISSUED + 60) == ()


def test_two_lists_two_hits(tmp_path, dept, trusted, audit) -> None:
    store = HotlistStore(tmp_path, trusted, audit)
    store.install(hotlist(dept), ISSUED, "test")
    store.install(hotlist(dept, list_id="amber", purpose="amber_alert", plates=("ABC1234",)), ISSUED, "test")
    assert {h.purpose for h in store.match("ABC1234", ISSUED)} == {"stolen_vehicle", "amber_alert"}


def test_stale_list_stops_matching_and_alerts_once(tmp_path, dept, trusted, audit) -> None:
    store = HotlistStore(tmp_path, trusted, audit)
    store.install(hotlist(dept, hours=1), ISSUED, "test")
    assert store.match("ABC1234", ISSUED + 3599) != ()
    assert store.stale(ISSUED + 3599) == []
    assert store.match("ABC1234", ISSUED + 3600) == ()
    assert store.match("ABC1234", ISSUED + 7200) == ()
    assert store.stale(ISSUED + 7200) == ["ct-stolen"]
    stale = [e for e in events(audit) if e["event"] == "hotlist.stale"]
    assert len(stale) == 1 and stale[0]["fields"]["list_id"] == "ct-stolen"


def test_refusals(tmp_path, dept, trusted, audit) -> None:
    store = HotlistStore(tmp_path, trusted, audit)
    store.install(hotlist(dept, version=3), ISSUED, "test")
    with pytest.raises(PolicyError, match="rollback"):
        store.install(hotlist(dept, version=3, plates=("ZZZ1",)), ISSUED, "replay")
    with pytest.raises(PolicyError, match="rollback"):
        store.install(hotlist(dept, version=2), ISSUED, "replay")
    vendor = load_private_key(POLICIES / "test-keys" / "vendor-TEST-ONLY.key")
    with pytest.raises(PolicyError, match="unknown_signer"):
        store.install(hotlist(vendor, version=4), ISSUED, "vendor")
    with pytest.raises(PolicyError, match="expired"):
        store.install(hotlist(dept, version=5, hours=1), ISSUED + 7200, "late")
    data = bytearray(hotlist(dept, version=6))
    data[200] ^= 0x04
    with pytest.raises(PolicyError):
        store.install(bytes(data), ISSUED, "tampered")
    refused = [e["fields"]["source"] for e in events(audit) if e["event"] == "hotlist.refused"]
    assert refused == ["replay", "replay", "vendor", "late", "tampered"]
    assert store.match("ABC1234", ISSUED)[0].list_version == 3


def test_bad_plate_refused_with_path(dept) -> None:
    with pytest.raises(PolicyError, match=r"plates\[1\]"):
        hotlist(dept, plates=("ABC123", "no/slash"))


def test_persisted_lists_reload_and_rollback_is_remembered(tmp_path, dept, trusted, audit) -> None:
    store = HotlistStore(tmp_path, trusted, audit)
    store.install(hotlist(dept, version=1), ISSUED, "test")
    store.install(hotlist(dept, version=2), ISSUED, "test")
    again = HotlistStore(tmp_path, trusted, audit)
    assert [h.version for h in again.load_persisted(ISSUED)] == [2]
    assert again.match("ABC1234", ISSUED)[0].list_version == 2
    (tmp_path / "hotlists" / "ct-stolen.bundle").write_bytes(hotlist(dept, version=1))
    third = HotlistStore(tmp_path, trusted, audit)
    assert third.load_persisted(ISSUED) == []
    assert third.match("ABC1234", ISSUED) == ()


def test_reinstalling_the_same_list_is_a_no_op(tmp_path, dept, trusted, audit) -> None:
    store = HotlistStore(tmp_path, trusted, audit)
    data = hotlist(dept, version=2)
    first = store.install(data, ISSUED, "mqtt")
    assert store.install(data, ISSUED + 10, "mqtt") is first
    assert [e["event"] for e in events(audit)] == ["hotlist.installed"]


def test_same_list_from_config_after_reboot_is_installed_again(tmp_path, dept, trusted, audit) -> None:
    """Bug pinned: after a reboot the configured hotlist (same bytes, same version) was refused
    as a rollback, leaving the unit with no lists."""
    data = hotlist(dept, version=4)
    HotlistStore(tmp_path, trusted, audit).install(data, ISSUED, "config")
    rebooted = HotlistStore(tmp_path, trusted, audit)
    assert rebooted.install(data, ISSUED + 60, "config").version == 4
    assert rebooted.match("ABC1234", ISSUED + 60)
    with pytest.raises(PolicyError, match="rollback"):
        HotlistStore(tmp_path, trusted, audit).install(hotlist(dept, version=3), ISSUED, "config")
