"""The rollback floor survives the loss of `policy.highwater` (issue 14, item 12).

Regression (black-box trial): delete `policy.highwater` from the state dir, put an older,
genuinely signed, wider bundle at `state/policy/policy.bundle`, restart with a config that
names no bundle: the agent installed version 28 over version 31 and shared more. The floor
now also comes from the audit log's `policy.installed` records. Each start here is the real
start path (`build_pipeline`), on one state dir, as a restarted unit would run.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from agent.audit.records import expanded_records
from agent.config.loader import load_config
from helpers.soak import destination_doc, policy_doc
from agent.policy.bundle import sign_bundle
from agent.runtime.pipeline import build_pipeline
from helpers.pipeline import ScriptedRecognizer, make_config

KEYS = Path(__file__).resolve().parents[1] / "firmware_config" / "policies" / "test-keys"
DEPT_PUB = KEYS / "department-TEST-ONLY.pub"
UNIT_KEY = KEYS / "unit-TEST-ONLY.key"          # signs the audit log's head
PIN = "0" * 64


def county() -> dict:
    return destination_doc("county", "mqtts://127.0.0.1:1", "pg/county", pin=PIN)


def feds() -> dict:
    return destination_doc("feds", "mqtts://127.0.0.1:2", "pg/feds", pin=PIN, dest_class="federal")


class Unit:
    def __init__(self, tmp_path: Path, dept) -> None:
        self.tmp = tmp_path
        self.dept = dept
        self.state = tmp_path / "state"
        self.policy_dir = self.state / "policy"
        self.bundles: dict[int, Path] = {}
        now = time.time()
        # 28 is wide (county and feds), 31 narrow (county only): both genuinely signed.
        for version, dests in ((28, [county(), feds()]), (31, [county()])):
            path = tmp_path / f"v{version}.bundle"
            path.write_bytes(sign_bundle(policy_doc(version, dests, now), dept))
            self.bundles[version] = path
        self.config = make_config(tmp_path, "[policy]\n")

    def open(self, bundle: int | None = None):
        """The agent's pipeline as one start builds it (config names `bundle`, or none)."""
        line = f'bundle = "{self.bundles[bundle]}"\n' if bundle else ""
        text = self.config.read_text()
        self.config.write_text(text[:text.index("[policy]")]
                               + f'[policy]\n{line}trusted_keys = ["{DEPT_PUB}"]\n'
                               + f'[audit]\nunit_key = "{UNIT_KEY}"\n')
        return build_pipeline(load_config(self.config), recognizer=ScriptedRecognizer())

    def start(self, bundle: int | None = None):
        """One start of the agent; returns (active policy, every audit record so far)."""
        pipeline = self.open(bundle)
        try:
            active = pipeline.policies.active(time.time())
            pipeline.audit.flush()
            return active, expanded_records(pipeline.audit.path)
        finally:
            pipeline.outbox.close()
            pipeline.audit.close()

    def plant_v28(self) -> None:
        """The attack: the high-water file gone, an older wider bundle put in its place."""
        (self.policy_dir / "policy.highwater").unlink()
        shutil.copyfile(self.bundles[28], self.policy_dir / "policy.bundle")

    def highwater(self) -> int:
        return json.loads((self.policy_dir / "policy.highwater").read_text())["version"]


@pytest.fixture
def unit(tmp_path, dept) -> Unit:
    u = Unit(tmp_path, dept)
    assert u.start(28)[0].version == 28
    assert u.start(31)[0].version == 31
    return u


def since_last_start(records: list[dict]) -> list[dict]:
    starts = [i for i, r in enumerate(records) if r["event"] == "keys.loaded"]
    return records[starts[-1]:]


def test_deleting_highwater_and_planting_an_older_bundle_is_refused(unit):
    unit.plant_v28()
    active, records = unit.start(None)
    assert active is None                                   # shares nothing, not version 28
    now = since_last_start(records)
    (inconsistent,) = [r["fields"] for r in now if r["event"] == "policy.floor_inconsistent"]
    assert (inconsistent["highwater_file"], inconsistent["audit_floor"], inconsistent["floor"]) == (None, 31, 31)
    (refused,) = [r["fields"] for r in now if r["event"] == "policy.refused"]
    assert refused["reason"] == "rollback" and "older than version 31" in refused["detail"]
    assert unit.highwater() == 31                           # the file is put back
    # A newer bundle still installs; the planted one stays refused when offered again.
    assert unit.start(31)[0].version == 31


def test_everything_gone_shares_nothing_until_a_bundle_arrives(unit):
    unit.plant_v28()
    for name in ("audit.jsonl", "audit.jsonl.head"):
        (unit.state / name).unlink()
    active, records = unit.start(None)
    assert active is None
    (refused,) = [r["fields"] for r in records if r["event"] == "policy.refused"]
    assert "neither policy.highwater nor the audit log records an installed version" in refused["detail"]
    assert unit.start(31)[0].version == 31                  # a bundle arrives (the config names it)


@pytest.mark.parametrize("head", ["removed", "forged-unsigned", "forged-signature"])
def test_cut_audit_log_is_not_trusted_for_the_floor(unit, head):
    """Cutting the log back to before version 31's install, to lower the audit floor, and
    removing or forging its head (the unit key, which signs it, is not the attacker's):
    the log shows signs of having been cut, so no persisted bundle loads."""
    unit.plant_v28()
    log = unit.state / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    cut = max(i for i, line in enumerate(lines) if b'"version":31' in line and b"policy.installed" in line)
    log.write_bytes(b"".join(lines[:cut]))
    head_file = unit.state / "audit.jsonl.head"
    last = json.loads(lines[cut - 1])
    sealed = json.loads(head_file.read_text())
    if head == "removed":
        head_file.unlink()
        why = "head file missing"
    elif head == "forged-unsigned":
        head_file.write_text(json.dumps({"seq": last["seq"], "hash": last["hash"], "key_id": None,
                                         "signature": None, "time": None}))
        why = "head not signed by the unit key"
    else:   # the unit's key id, and the signature of the real head (over another seq and hash)
        head_file.write_text(json.dumps({**sealed, "seq": last["seq"], "hash": last["hash"]}))
        why = "head signature does not verify with the unit key"
    active, records = unit.start(None)
    assert active is None
    refused = [r["fields"] for r in since_last_start(records) if r["event"] == "policy.refused"]
    assert f"the audit log may have been cut ({why})" in refused[-1]["detail"]


def test_higher_highwater_file_wins_over_a_lost_audit_log(unit):
    for name in ("audit.jsonl", "audit.jsonl.head"):
        (unit.state / name).unlink()
    active, records = unit.start(None)
    assert active.version == 31                             # its own persisted bundle, floor 31
    (inconsistent,) = [r["fields"] for r in records if r["event"] == "policy.floor_inconsistent"]
    assert (inconsistent["highwater_file"], inconsistent["audit_floor"]) == (31, 0)
    (unit.policy_dir / "policy.bundle").write_bytes(unit.bundles[28].read_bytes())
    assert unit.start(None)[0] is None                      # and v28 stays below it


def test_after_a_bundle_arrives_the_persisted_one_is_trusted_again(unit):
    """The 'shares nothing' state ends with the first install: a later re-read of the
    persisted bundle (SIGHUP re-reads it) is not refused."""
    unit.plant_v28()
    for name in ("audit.jsonl", "audit.jsonl.head"):
        (unit.state / name).unlink()
    pipeline = unit.open(31)
    try:
        assert pipeline.policies.active(time.time()).version == 31
        assert pipeline.policies.load_persisted(time.time()).version == 31
    finally:
        pipeline.outbox.close()
        pipeline.audit.close()
