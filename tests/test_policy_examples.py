"""The example bundles verify with the test key and are reproducible from the generator."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.policy.bundle import load_bundle
from agent.policy.hotlist import load_hotlist
from agent.policy.signing import key_id, load_private_key, load_trusted_keys

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "firmware_config" / "policies"
NOW = 1_800_000_000.0


@pytest.mark.parametrize("name", ["ct-trust-act", "ca-sb34", "il-2023", "strict-hits-only", "demo"])
def test_example_bundle_verifies(name) -> None:
    keys = load_trusted_keys([POLICIES / "test-keys" / "department-TEST-ONLY.pub"])
    policy = load_bundle((POLICIES / f"{name}.bundle").read_bytes(), keys, NOW, None)
    assert policy.expires_at >= 2_082_758_400  # 2036-01-01: far enough that tests don't rot


def test_demo_policy_shape() -> None:
    keys = load_trusted_keys([POLICIES / "test-keys" / "department-TEST-ONLY.pub"])
    policy = load_bundle((POLICIES / "demo.bundle").read_bytes(), keys, NOW, None)
    records, ice = policy.destination("county-records"), policy.destination("ice-era")
    assert (records.dest_class, records.jurisdiction, records.rule.mode, records.rule.plate_form) == \
        ("local_police", "US-CT", "all", "clear")
    assert (ice.dest_class, ice.rule.mode) == ("federal_immigration", "all")
    assert records.transport.broker_url == "mqtts://127.0.0.1:8883"
    assert records.transport.server_key_sha256 and ice.transport.server_key_sha256
    load_hotlist((POLICIES / "demo-hotlist.bundle").read_bytes(), keys, NOW, None)


def test_test_keys_are_marked_and_match_their_ids() -> None:
    for key_file in (POLICIES / "test-keys").glob("*.key"):
        assert "TEST-ONLY" in key_file.name
        assert (POLICIES / "test-keys" / (key_file.stem + ".pub")).exists()
        load_private_key(key_file)
    dept = load_private_key(POLICIES / "test-keys" / "department-TEST-ONLY.key")
    assert key_id(dept.public_key()) == "6635fd2899919beb"


def test_generator_is_deterministic(tmp_path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_example_policies.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for path in POLICIES.glob("*.bundle"):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    for path in POLICIES.glob("*.json"):
        assert (tmp_path / path.name).read_text() == path.read_text(), path.name
