"""Random policies survive JSON -> signed bundle -> load_bundle unchanged (parser matches the model)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from hypothesis import given, settings

from agent.policy.bundle import load_bundle, parse_policy_json, sign_bundle
from agent.policy.schema import policy_to_dict
from agent.policy.signing import key_id, load_private_key
from helpers.policy_strategies import policies

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
DEPT = load_private_key(POLICIES / "test-keys" / "department-TEST-ONLY.key")
TRUSTED = {key_id(DEPT.public_key()): DEPT.public_key()}


def same(a, b) -> bool:
    strip = {"digest": "", "signer_key_id": ""}
    return dataclasses.replace(a, **strip) == dataclasses.replace(b, **strip)


@settings(max_examples=300, deadline=None)
@given(policies())
def test_policy_round_trips_through_a_signed_bundle(policy) -> None:
    # whole seconds: the JSON carries ISO times to the microsecond, the model floats
    policy = dataclasses.replace(policy, issued_at=float(int(policy.issued_at)))
    doc = policy_to_dict(policy)
    data = sign_bundle(doc, DEPT)
    loaded = load_bundle(data, TRUSTED, policy.not_before, None) if policy.not_before < policy.expires_at else None
    assert loaded is None or same(loaded, policy)
    assert same(parse_policy_json(data), policy)


def test_examples_round_trip() -> None:
    for path in POLICIES.glob("*.bundle"):
        if path.name.startswith("demo-hotlist"):
            continue
        policy = parse_policy_json(path.read_bytes())
        assert same(parse_policy_json(sign_bundle(policy_to_dict(policy), DEPT)), policy), path.name
