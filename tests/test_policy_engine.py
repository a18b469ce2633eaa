"""Table-driven decisions for the example policies and each rule of the engine."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.policy.bundle import load_bundle
from agent.policy.engine import decide, decide_all
from agent.policy.model import Declaration, Prohibitions
from agent.policy.signing import load_trusted_keys
from agent.reads import HotlistHit, ReadEvent

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
NOW = 1_800_000_000.0  # 2027-01-15, inside every example's validity window


def load(name: str):
    keys = load_trusted_keys([POLICIES / "test-keys" / "department-TEST-ONLY.pub"])
    return load_bundle((POLICIES / f"{name}.bundle").read_bytes(), keys, NOW, None)


def read(age: float = 10.0, *purposes: str) -> ReadEvent:
    hits = tuple(HotlistHit(f"list-{p}", 1, p, "test") for p in purposes)
    return ReadEvent("ABC1234", 0.93, NOW - age, "cam-1", latitude=41.7637, longitude=-72.6851, hits=hits)


def outcome(policy_name: str, r: ReadEvent) -> dict[str, str]:
    policy = load(policy_name)
    return {d.id: (dec.rule_id if not dec.allowed else f"ALLOW {dec.rule_id}")
            for d, dec in decide_all(r, policy, NOW)}


@pytest.mark.parametrize("policy_name, r, expected", [
    ("demo", read(), {"county-records": "ALLOW county-all",
                      "ice-era": "prohibition:class:federal_immigration"}),
    ("demo", read(10, "stolen_vehicle"), {"county-records": "ALLOW county-all",
                                          "ice-era": "prohibition:class:federal_immigration"}),
    ("ct-trust-act", read(), {"own-records": "ALLOW own-all", "ct-fusion-center": "rule:ctic-hits:not-a-hit"}),
    ("ct-trust-act", read(10, "stolen_vehicle"), {"own-records": "ALLOW own-all",
                                                  "ct-fusion-center": "ALLOW ctic-hits"}),
    ("ct-trust-act", read(7200, "stolen_vehicle"), {"own-records": "ALLOW own-all",
                                                    "ct-fusion-center": "rule:ctic-hits:max-age"}),
    ("ct-trust-act", read(10, "immigration_enforcement"), {
        "own-records": "ALLOW own-all", "ct-fusion-center": "prohibition:purpose:immigration_enforcement"}),
    ("ct-trust-act", read(10, "homicide_investigation"), {
        "own-records": "ALLOW own-all", "ct-fusion-center": "rule:ctic-hits:purpose"}),
    ("ct-trust-act", read(2 * 86400), {"own-records": "retention:expired",
                                       "ct-fusion-center": "retention:expired"}),
    ("ca-sb34", read(10, "amber_alert"), {"own-records": "ALLOW own-all", "county-sheriff": "ALLOW sheriff-hits",
                                          "chp": "ALLOW chp-hits"}),
    ("il-2023", read(10, "felony_warrant"), {"own-records": "ALLOW own-all", "isp": "ALLOW isp-hits",
                                             "indiana-state-police": "ALLOW in-isp-hits"}),
    ("il-2023", read(10, "reproductive_health_care"), {
        "own-records": "ALLOW own-all", "isp": "prohibition:purpose:reproductive_health_care",
        "indiana-state-police": "prohibition:purpose:reproductive_health_care"}),
    ("strict-hits-only", read(), {"state-fusion-center": "rule:fusion-hits-hashed:not-a-hit"}),
    ("strict-hits-only", read(240), {"state-fusion-center": "retention:expired"}),
    ("strict-hits-only", read(60, "missing_person"), {"state-fusion-center": "ALLOW fusion-hits-hashed"}),
])
def test_example_policies(policy_name, r, expected) -> None:
    assert outcome(policy_name, r) == expected


def test_no_policy_denies() -> None:
    policy = load("demo")
    d = decide(read(), policy.destinations[0], None, NOW)
    assert (d.allowed, d.rule_id) == (False, "default-deny:no-policy")


def test_expired_and_not_yet_valid_policy_deny() -> None:
    policy = load("demo")
    dest = policy.destinations[0]
    assert decide(read(), dest, policy, policy.expires_at).rule_id == "policy:expired"
    assert decide(read(), dest, policy, policy.not_before - 1).rule_id == "policy:not-yet-valid"


def test_destination_compared_by_value() -> None:
    """Same id, swapped broker: not the listed destination, so it gets nothing."""
    policy = load("demo")
    dest = policy.destinations[0]
    evil = dataclasses.replace(dest, transport=dataclasses.replace(dest.transport, broker_url="mqtt://10.0.0.9:1883"))
    assert decide(read(), evil, policy, NOW).rule_id == "default-deny:unlisted"
    assert decide(read(), dataclasses.replace(dest), policy, NOW).allowed  # equal copy is listed


def test_prohibited_jurisdiction() -> None:
    policy = load("ct-trust-act")
    dest = dataclasses.replace(policy.destinations[0], jurisdiction="US-NY")
    policy = dataclasses.replace(policy, destinations=(dest,))
    assert decide(read(), dest, policy, NOW).rule_id == "prohibition:jurisdiction:US-NY"


def test_destination_whose_only_purposes_are_prohibited_gets_nothing() -> None:
    policy = load("ct-trust-act")
    dest = dataclasses.replace(policy.destinations[0], purposes=frozenset({"first_amendment_activity"}))
    policy = dataclasses.replace(policy, destinations=(dest,))
    assert decide(read(), dest, policy, NOW).rule_id == "prohibition:purpose:first_amendment_activity"


def test_prohibited_hit_purpose_is_stripped_for_mode_all() -> None:
    """A mode-all destination still gets the read, but not the prohibited hit's purpose."""
    policy = load("ct-trust-act")
    d = decide(read(10, "immigration_enforcement", "stolen_vehicle"), policy.destinations[0], policy, NOW)
    assert d.allowed and d.purposes == frozenset({"stolen_vehicle"})


def test_declarations() -> None:
    policy = load("il-2023")
    indiana = policy.destination("indiana-state-police")
    hit = read(10, "stolen_vehicle")
    assert decide(hit, indiana, policy, indiana.declaration.expires_at).rule_id == "declaration:expired"
    no_decl = dataclasses.replace(indiana, declaration=None)
    policy2 = dataclasses.replace(policy, destinations=(no_decl,))
    assert decide(hit, no_decl, policy2, NOW).rule_id == "declaration:missing"
    # required by class
    isp = policy.destination("isp")
    proh = dataclasses.replace(policy.prohibitions, declaration_required_classes=frozenset({"state_police"}))
    policy3 = dataclasses.replace(policy, prohibitions=proh)
    assert decide(hit, isp, policy3, NOW).rule_id == "declaration:missing"
    isp_decl = dataclasses.replace(isp, declaration=Declaration("d-1", NOW + 100))
    policy4 = dataclasses.replace(policy3, destinations=(isp_decl,))
    assert decide(hit, isp_decl, policy4, NOW).allowed


def test_mode_none_denies() -> None:
    policy = load("demo")
    dest = policy.destinations[0]
    quiet = dataclasses.replace(dest, rule=dataclasses.replace(dest.rule, mode="none"))
    policy = dataclasses.replace(policy, destinations=(quiet,))
    assert decide(read(), quiet, policy, NOW).rule_id == "rule:county-all"


def test_unknown_mode_fails_closed() -> None:
    policy = load("demo")
    dest = policy.destinations[0]
    odd = dataclasses.replace(dest, rule=dataclasses.replace(dest.rule, mode="everything"))
    policy = dataclasses.replace(policy, destinations=(odd,))
    assert decide(read(), odd, policy, NOW).rule_id == "rule:county-all:unknown-mode"


def test_hit_retention_is_longer_than_nonhit() -> None:
    policy = load("ct-trust-act")
    dest = policy.destinations[0]
    assert not decide(read(2 * 86400), dest, policy, NOW).allowed
    assert decide(read(2 * 86400, "stolen_vehicle"), dest, policy, NOW).allowed
    assert not decide(read(15 * 86400, "stolen_vehicle"), dest, policy, NOW).allowed


def test_deny_overrides_allow_even_with_empty_allowed_jurisdictions() -> None:
    policy = load("il-2023")
    proh = Prohibitions(classes=frozenset({"state_police"}), purposes=frozenset(),
                        allowed_jurisdictions=frozenset())
    policy = dataclasses.replace(policy, prohibitions=proh)
    isp = policy.destination("isp")
    assert decide(read(10, "stolen_vehicle"), isp, policy, NOW).rule_id == "prohibition:class:state_police"


def test_reasons_are_sentences() -> None:
    policy = load("demo")
    for _dest, d in decide_all(read(), policy, NOW):
        assert d.reason and " " in d.reason
