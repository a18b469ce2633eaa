"""End to end on real files: install the demo policy and hotlist, decide and project a stream of
reads, audit every decision, then verify the log and check the report against what happened."""
from __future__ import annotations

import json
from pathlib import Path

from agent.audit.log import AuditLog, verify_log
from agent.audit.records import record_decision, record_read
from agent.audit.report import build_report
from agent.policy.engine import decide
from agent.policy.hotlist import HotlistStore
from agent.policy.minimise import payload_conforms, project_fields
from agent.policy.signing import load_private_key, load_trusted_keys
from agent.policy.store import PolicyStore
from agent.reads import ReadEvent

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
NOW = 1_800_000_000.0


def test_demo_flow(tmp_path) -> None:
    trusted = load_trusted_keys([POLICIES / "test-keys" / "department-TEST-ONLY.pub"])
    unit_key = load_private_key(POLICIES / "test-keys" / "unit-TEST-ONLY.key")
    audit = AuditLog(tmp_path / "audit.jsonl", unit_key, checkpoint_every=50)
    policies = PolicyStore(tmp_path / "policy", trusted, audit)
    hotlists = HotlistStore(tmp_path / "hotlists", trusted, audit)
    policies.install((POLICIES / "demo.bundle").read_bytes(), NOW, "test")
    hotlists.install((POLICIES / "demo-hotlist.bundle").read_bytes(), NOW, "test")

    plates = ["ABC1234", "XYZ999", "DEMO 123", "QQ1", "7XYZ123", "LMN456"]
    sent: dict[str, list[dict]] = {}
    for i, plate in enumerate(plates * 5):
        read = ReadEvent(plate, 0.9, NOW + i - 5, "cam-1", read_id=f"r{i}", latitude=41.7, longitude=-72.6,
                         hits=hotlists.match(plate, NOW + i))
        record_read(audit, read)
        policy = policies.active(NOW + i)
        for dest in policy.destinations:
            decision = decide(read, dest, policy, NOW + i)
            record_decision(audit, read, dest, decision)
            if decision.allowed:
                payload = project_fields(read, decision, dest, None)
                assert payload_conforms(payload, decide(read, dest, policy, NOW + i + 1), dest) is None
                sent.setdefault(dest.id, []).append(payload)
        audit.flush()
    audit.close()

    assert "ice-era" not in sent
    assert len(sent["county-records"]) == 30
    assert sum(1 for p in sent["county-records"] if p.get("hits")) == 15  # ABC1234, DEMO 123, 7XYZ123
    result = verify_log(tmp_path / "audit.jsonl", unit_key.public_key())
    assert result.ok and result.signed_checkpoints_verified >= 1
    report = build_report(tmp_path / "audit.jsonl")
    assert report["reads"] == {"seen": 30, "hits": 15}
    assert report["shares"]["by_destination"] == {"county-records": 30}
    assert report["shares"]["by_purpose"] == {"(all reads)": 15, "stolen_vehicle": 15}
    assert report["denials"]["by_prohibition"] == {"prohibition:class:federal_immigration": 30}
    assert [c["previous_version"] for c in report["policy_changes"]] == [None]  # one install, no change since
    text = (tmp_path / "audit.jsonl").read_text()
    assert not any(p in text for p in ("ABC1234", "XYZ999", "LMN456"))  # no plate text in the audit log
    assert json.loads(text.splitlines()[0])["event"] == "policy.installed"
