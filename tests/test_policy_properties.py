"""Property-based tests of the sharing invariants (DESIGN.md 1, 2, 3 and 6).

Thousands of random policies, destinations and reads; for every decision that allows a
share, each forbidden condition is checked independently of the engine's own code path,
and the projected payload is checked to carry only what the rule allows.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings

from agent.policy.engine import decide
from agent.policy.minimise import payload_fields, payload_purposes, project_fields
from agent.policy.model import Destination, Policy
from agent.reads import ReadEvent
from helpers.policy_strategies import NOW, SETTINGS, cases, policies, reads


def assert_invariants(policy: Policy, dest: Destination, read: ReadEvent, now: float) -> None:
    decision = decide(read, dest, policy, now)
    if not decision.allowed:
        assert decision.fields == frozenset()
        assert decision.rule_id
        return
    proh = policy.prohibitions
    # fail closed on the policy's own validity
    assert policy.not_before <= now < policy.expires_at
    # deny by default: listed, by value
    assert any(d == dest for d in policy.destinations)
    # deny overrides allow
    assert dest.dest_class not in proh.classes
    assert not proh.allowed_jurisdictions or dest.jurisdiction in proh.allowed_jurisdictions
    assert dest.purposes - proh.purposes
    # declarations
    if dest.declaration is not None:
        assert now < dest.declaration.expires_at
    else:
        assert dest.dest_class not in proh.declaration_required_classes
        assert not proh.declaration_required_outside or dest.jurisdiction in proh.declaration_required_outside
    # the rule
    assert dest.rule.mode in ("all", "hotlist_hits")
    age = now - read.seen_at
    assert age <= (policy.retention.hit_max_age_s if read.hits else policy.retention.nonhit_max_age_s)
    assert dest.rule.max_age_s is None or age <= dest.rule.max_age_s
    read_purposes = {h.purpose for h in read.hits}
    assert decision.purposes <= read_purposes
    assert not (decision.purposes & proh.purposes)
    assert decision.purposes <= dest.purposes
    if dest.rule.mode == "hotlist_hits":
        assert read.hits and decision.purposes
    assert decision.fields <= dest.rule.fields
    # minimisation: the payload carries only allowed fields, in the allowed form
    payload = project_fields(read, decision, dest, b"k" * 32)
    assert payload_fields(payload) <= dest.rule.fields
    assert payload_purposes(payload) <= decision.purposes
    if dest.rule.plate_form == "hmac_sha256":
        assert "plate" not in payload
    if "plate" in payload or "plate_hmac" in payload:
        assert "plate" in dest.rule.fields
    if "location" in payload:
        assert payload["location"]["precision_m"] >= dest.rule.location_precision_m
    # plate text (all generated plates start "ZQ", never hex or base64 of the test images)
    # appears nowhere but the clear "plate" field
    assert "ZQ" not in str({k: v for k, v in payload.items() if k != "plate"})


@SETTINGS
@given(cases())
def test_no_decision_breaks_an_invariant(case) -> None:
    policy, dest, read, now = case
    assert_invariants(policy, dest, read, now)
    # pure: the outbox and the egress gate must get the same answer
    assert decide(read, dest, policy, now) == decide(read, dest, policy, now)
    # fail closed: no policy, nothing shared
    assert not decide(read, dest, None, now).allowed


@SETTINGS
@given(policies(), reads())
def test_every_listed_destination_obeys_invariants(policy, read) -> None:
    for dest in policy.destinations:
        assert_invariants(policy, dest, read, NOW)


@pytest.mark.slow
def test_generators_reach_allowed_decisions() -> None:
    """Guard against a vacuous property test: the strategies must produce allowed shares."""
    allowed = 0

    # derandomize: a fixed example sequence, so this guard cannot fail by chance (it did,
    # rarely, with random draws).
    @settings(max_examples=400, deadline=None, database=None, derandomize=True)
    @given(cases())
    def count(case) -> None:
        nonlocal allowed
        policy, dest, read, now = case
        allowed += decide(read, dest, policy, now).allowed

    count()
    assert allowed >= 20, allowed
