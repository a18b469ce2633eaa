"""`plategate policy check`: findings about a policy that parses but may not do what was meant.

Each check is a small named function over the Policy, returning findings; errors make
`check` exit 2, warnings are printed (and fail only with --strict). Schema problems (unknown
fields, unknown purpose codes, wrong types) are found earlier, by the parser.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from agent.policy.model import Destination, Policy
from agent.policy.schema import format_time

SOON_S = 30 * 86400.0


@dataclass(frozen=True)
class Finding:
    level: str      # "error" or "warning"
    where: str      # e.g. "destinations[ice-era]"
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def _where(dest: Destination) -> str:
    return f"destinations[{dest.id}]"


def check_expiry(policy: Policy, now: float) -> Iterator[Finding]:
    if policy.expires_at <= now:
        yield Finding("error", "expires_at", f"expired at {format_time(policy.expires_at)}: a unit shares "
                                             f"nothing under it")
    elif policy.expires_at - now < SOON_S:
        yield Finding("warning", "expires_at", f"expires soon ({format_time(policy.expires_at)}); after that "
                                               f"units share nothing until a new version is installed")
    if policy.not_before > now:
        yield Finding("warning", "not_before", f"not valid before {format_time(policy.not_before)}: units "
                                               f"refuse it until then (it is not held)")


def check_shadowed(policy: Policy, now: float) -> Iterator[Finding]:
    proh = policy.prohibitions
    for dest in policy.destinations:
        rule = dest.rule.id
        if dest.dest_class in proh.classes:
            yield Finding("warning", _where(dest), f"rule {rule!r} is shadowed: class {dest.dest_class} is "
                                                   f"prohibited, so this destination receives nothing")
        elif proh.allowed_jurisdictions and dest.jurisdiction not in proh.allowed_jurisdictions:
            yield Finding("warning", _where(dest), f"rule {rule!r} is shadowed: jurisdiction {dest.jurisdiction} "
                                                   f"is outside {sorted(proh.allowed_jurisdictions)}, so this "
                                                   f"destination receives nothing")
        elif dest.purposes <= proh.purposes:
            yield Finding("warning", _where(dest), f"rule {rule!r} is shadowed: every purpose "
                                                   f"{sorted(dest.purposes)} is prohibited")
        elif dest.purposes & proh.purposes:
            yield Finding("warning", _where(dest), f"purposes {sorted(dest.purposes & proh.purposes)} are "
                                                   f"prohibited; hits for them are never shared")


def check_transport(policy: Policy, now: float) -> Iterator[Finding]:
    """Plain MQTT to loopback passes the schema (which refuses every other transport without
    TLS and a key pin), but a unit refuses it unless its device config opts in."""
    for dest in policy.destinations:
        if not dest.transport.broker_url.startswith("mqtts://"):
            yield Finding("warning", _where(dest) + ".transport",
                          f"{dest.transport.broker_url} is plain MQTT to a loopback broker: units refuse "
                          f"it unless their device config sets [delivery] allow_plaintext_loopback = true "
                          f"(tests and demos only)")


def check_declarations(policy: Policy, now: float) -> Iterator[Finding]:
    proh = policy.prohibitions
    for dest in policy.destinations:
        decl = dest.declaration
        required = dest.dest_class in proh.declaration_required_classes or (
            bool(proh.declaration_required_outside) and dest.jurisdiction not in proh.declaration_required_outside)
        if decl is None and required:
            yield Finding("warning", _where(dest), "the policy requires a data-sharing declaration for this "
                                                   "destination and none is on file: it receives nothing")
        elif decl is not None and decl.expires_at <= now:
            yield Finding("error", _where(dest) + ".declaration",
                          f"declaration {decl.id!r} expired at {format_time(decl.expires_at)}: no sharing")
        elif decl is not None and decl.expires_at < policy.expires_at:
            yield Finding("warning", _where(dest) + ".declaration",
                          f"declaration {decl.id!r} expires ({format_time(decl.expires_at)}) before the policy "
                          f"does; sharing with this destination stops then")


def check_rules(policy: Policy, now: float) -> Iterator[Finding]:
    for dest in policy.destinations:
        rule = dest.rule
        where = _where(dest) + ".rule"
        if rule.mode == "none":
            yield Finding("warning", where, f"rule {rule.id!r} has mode none: listed but receives nothing")
            continue
        if not rule.fields:
            yield Finding("warning", where, f"rule {rule.id!r} allows no fields: messages would be empty")
        if rule.plate_form == "hmac_sha256" and "plate" not in rule.fields:
            yield Finding("warning", where, "plate_form hmac_sha256 has no effect: 'plate' is not an allowed field")
        if rule.plate_form == "hmac_sha256":
            yield Finding("warning", where, f"needs a per-destination HMAC key for {dest.id!r} in the device "
                                            f"config, or nothing is sent to it")
        retention = max(policy.retention.hit_max_age_s, policy.retention.nonhit_max_age_s)
        if rule.max_age_s is not None and rule.max_age_s > retention:
            yield Finding("warning", where, f"max_age_s {rule.max_age_s:.0f} exceeds the retention; "
                                            f"retention applies first")


CHECKS: tuple[Callable[[Policy, float], Iterator[Finding]], ...] = (
    check_expiry, check_shadowed, check_transport, check_declarations, check_rules,
)


def lint_policy(policy: Policy, now: float) -> list[Finding]:
    findings = [f for check in CHECKS for f in check(policy, now)]
    return sorted(findings, key=lambda f: (f.level != "error", f.where))
