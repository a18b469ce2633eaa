"""Each `policy check` lint alone: what it flags, at which level, with which words."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.policy.bundle import parse_policy_json
from agent.policy.lint import (
    check_declarations, check_expiry, check_rules, check_shadowed, check_transport, lint_policy,
)
from agent.policy.model import Declaration

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
NOW = 1_800_000_000.0


def policy(name: str = "ct-trust-act"):
    return parse_policy_json((POLICIES / f"{name}.json").read_bytes())


def with_dest(p, index: int, **changes):
    dests = list(p.destinations)
    dests[index] = dataclasses.replace(dests[index], **changes)
    return dataclasses.replace(p, destinations=tuple(dests))


def levels(findings) -> list[tuple[str, str]]:
    return [(f.level, f.where) for f in findings]


def test_clean_examples() -> None:
    assert lint_policy(policy("ct-trust-act"), NOW) == []
    assert lint_policy(policy("ca-sb34"), NOW) == []


def test_expiry() -> None:
    p = policy()
    assert levels(check_expiry(p, p.expires_at + 1)) == [("error", "expires_at")]
    assert levels(check_expiry(p, p.expires_at - 86400)) == [("warning", "expires_at")]
    assert levels(check_expiry(p, p.not_before - 1)) == [("warning", "not_before")]
    assert list(check_expiry(p, NOW)) == []


def test_shadowed_rules() -> None:
    p = policy()
    found = list(check_shadowed(with_dest(p, 1, dest_class="private"), NOW))
    assert "shadowed: class private is prohibited" in found[0].message
    found = list(check_shadowed(with_dest(p, 1, jurisdiction="US-NY"), NOW))
    assert "jurisdiction US-NY" in found[0].message
    found = list(check_shadowed(with_dest(p, 1, purposes=frozenset({"immigration_enforcement"})), NOW))
    assert "every purpose" in found[0].message
    found = list(check_shadowed(with_dest(p, 1, purposes=frozenset({"immigration_enforcement", "amber_alert"})), NOW))
    assert "['immigration_enforcement'] are prohibited" in found[0].message


def test_transport() -> None:
    """Only plain loopback MQTT gets this far (the schema refuses the rest): a warning that
    units refuse it without their device opt-in."""
    p = policy()
    t = p.destinations[1].transport
    assert list(check_transport(p, NOW)) == []
    plain = with_dest(p, 1, transport=dataclasses.replace(t, broker_url="mqtt://127.0.0.1:1883",
                                                          server_key_sha256=None))
    (finding,) = check_transport(plain, NOW)
    assert (finding.level, finding.where) == ("warning", "destinations[ct-fusion-center].transport")
    assert "allow_plaintext_loopback" in finding.message
    assert list(check_transport(policy("demo"), NOW)) == []


def test_declarations() -> None:
    p = policy("il-2023")
    indiana = p.destination("indiana-state-police")
    expired = with_dest(p, 2, declaration=Declaration(indiana.declaration.id, NOW - 1))
    assert ("error", "destinations[indiana-state-police].declaration") in levels(check_declarations(expired, NOW))
    missing = with_dest(p, 2, declaration=None)
    assert "none is on file" in list(check_declarations(missing, NOW))[0].message


def test_rules() -> None:
    p = policy()
    rule = p.destinations[1].rule
    assert "mode none" in list(check_rules(with_dest(p, 1, rule=dataclasses.replace(rule, mode="none")), NOW))[0].message
    assert "no fields" in list(check_rules(with_dest(p, 1, rule=dataclasses.replace(rule, fields=frozenset())), NOW))[0].message
    hashed = list(check_rules(with_dest(p, 1, rule=dataclasses.replace(rule, plate_form="hmac_sha256")), NOW))
    assert any("HMAC key" in f.message for f in hashed)
    old = list(check_rules(with_dest(p, 1, rule=dataclasses.replace(rule, max_age_s=10 ** 9)), NOW))
    assert "exceeds the retention" in old[0].message


def test_errors_sort_first() -> None:
    p = policy()
    mixed = with_dest(p, 1, dest_class="private", declaration=Declaration("d-1", NOW - 1))
    findings = lint_policy(mixed, NOW)
    assert findings[0].level == "error" and findings[-1].level == "warning"
