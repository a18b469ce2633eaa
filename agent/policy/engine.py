"""The sharing decision: may this read go to this destination, and with which fields?

Pure function of (read, destination, policy, now): no I/O, no clock, no globals, so the
outbox (when queueing) and the egress gate (just before the wire) get the same answer for
the same inputs. The checks run in a fixed order and the first that fails names itself in
``Decision.rule_id``; see docs/policy.md for the table. The order encodes the invariants:

1. fail closed   - no policy, policy not yet valid, policy expired
2. deny default  - the destination must be listed in the policy, by value (same id with
                   other contents, e.g. a swapped broker or pin, is not listed)
3. deny > allow  - prohibited class, jurisdiction outside the allowed set, every purpose
                   of the destination prohibited
4. paperwork     - declaration expired, or missing where the policy requires one
5. the rule      - mode none; read past retention; read older than the rule's max age;
                   hits-only rule and no hit for a purpose the destination may receive
"""
from __future__ import annotations

from agent.policy.model import FIELDS, Decision, Destination, Policy
from agent.reads import HotlistHit, ReadEvent

_NO_FIELDS: frozenset[str] = frozenset()


def _deny(rule_id: str, reason: str) -> Decision:
    return Decision(False, _NO_FIELDS, rule_id, reason)


_NO_POLICY = _deny("default-deny:no-policy", "no valid policy is installed, so nothing is shared")


def decide(read: ReadEvent, destination: Destination, policy: Policy | None, now: float) -> Decision:
    """Decide one (read, destination) pair under ``policy`` at time ``now`` (unix seconds)."""
    if policy is None:
        return _NO_POLICY
    if now < policy.not_before:
        return _deny("policy:not-yet-valid", f"policy version {policy.version} is not valid yet")
    if now >= policy.expires_at:
        return _deny("policy:expired", f"policy version {policy.version} has expired, so nothing is shared")
    for listed in policy.destinations:
        if listed is destination:   # the usual case, without comparing every field of the
            break                   # destinations listed before it; same answer as `in`
    else:
        if destination not in policy.destinations:
            return _deny("default-deny:unlisted",
                         f"destination {destination.id!r} is not listed (as configured) in "
                         f"policy version {policy.version}")

    proh = policy.prohibitions
    cls = destination.dest_class
    if cls in proh.classes:
        return _deny(f"prohibition:class:{cls}",
                     f"the policy prohibits sharing with {cls} agencies ({destination.agency})")
    jur = destination.jurisdiction
    if proh.allowed_jurisdictions and jur not in proh.allowed_jurisdictions:
        return _deny(f"prohibition:jurisdiction:{jur}",
                     f"{destination.agency} is in {jur}, outside the jurisdictions the policy allows")
    purposes = destination.purposes - proh.purposes
    if not purposes:
        blocked = sorted(destination.purposes & proh.purposes)
        if blocked:
            return _deny(f"prohibition:purpose:{blocked[0]}",
                         f"every purpose {destination.id!r} may receive for is prohibited "
                         f"({', '.join(blocked)})")
        return _deny(f"rule:{destination.rule.id}:no-purpose",
                     f"destination {destination.id!r} has no purpose to receive reads for")

    decl = destination.declaration
    if decl is None:
        if cls in proh.declaration_required_classes or (
                proh.declaration_required_outside and jur not in proh.declaration_required_outside):
            return _deny("declaration:missing",
                         f"the policy requires a data-sharing declaration on file for {destination.agency}")
    elif now >= decl.expires_at:
        return _deny("declaration:expired",
                     f"data-sharing declaration {decl.id!r} for {destination.agency} has expired")

    rule = destination.rule
    mode = rule.mode
    if mode == "none":
        return _deny(f"rule:{rule.id}", f"rule {rule.id!r} shares nothing with {destination.id!r}")
    if mode != "all" and mode != "hotlist_hits":
        return _deny(f"rule:{rule.id}:unknown-mode", f"rule {rule.id!r} has unknown mode {mode!r}")

    age = now - read.seen_at
    hits = read.hits
    shared = frozenset(h.purpose for h in hits if h.purpose in purposes) if hits else _NO_FIELDS
    retention = policy.retention
    # The hit retention applies only where the hit is shared: a destination that may not
    # learn of a hit must not learn of it from a read older than any non-hit it gets
    # (issue 14, item 10). Past either limit the unit does not keep the read at all.
    if shared:
        limit = retention.hit_max_age_s
    elif hits:
        limit = min(retention.hit_max_age_s, retention.nonhit_max_age_s)
    else:
        limit = retention.nonhit_max_age_s
    if age > limit:
        return _deny("retention:expired", f"read is {age:.0f}s old, past the policy's retention")
    if rule.max_age_s is not None and age > rule.max_age_s:
        return _deny(f"rule:{rule.id}:max-age",
                     f"read is {age:.0f}s old, older than rule {rule.id!r} allows ({rule.max_age_s:.0f}s)")

    if mode == "hotlist_hits" and not shared:
        if not hits:
            return _deny(f"rule:{rule.id}:not-a-hit", f"rule {rule.id!r} shares hotlist hits only")
        blocked = sorted({h.purpose for h in hits} & proh.purposes)
        if blocked:
            return _deny(f"prohibition:purpose:{blocked[0]}",
                         f"the read's hotlist purpose {blocked[0]} is prohibited")
        return _deny(f"rule:{rule.id}:purpose",
                     f"the read's hotlist purposes are not ones {destination.id!r} may receive")
    fields = rule.fields if rule.fields <= FIELDS else rule.fields & FIELDS
    if mode == "all":
        reason = f"rule {rule.id!r} shares all reads with {destination.id!r}"
    else:
        reason = f"rule {rule.id!r} shares hits for {', '.join(sorted(shared))} with {destination.id!r}"
    return Decision(True, fields, rule.id, reason, shared)


def may_receive(destination: Destination, policy: Policy | None, now: float) -> Decision:
    """Could any read at all go to ``destination`` now? (allowed, or the denial that says why.)

    Asked with the most favourable read there is: seen just now and a hotlist hit for every
    purpose the destination lists. Whatever denies that read (no policy, unlisted,
    prohibited class or jurisdiction, every purpose prohibited, declaration missing or
    expired, mode none) denies every read, so the delivery stage opens no connection at all
    to such a destination (DESIGN invariant 5). Being decide() itself, it cannot drift from it.
    """
    probe = ReadEvent(plate="", confidence=1.0, seen_at=now, camera_id="", read_id="may-receive",
                      hits=tuple(HotlistHit("may-receive", 0, purpose, "")
                                 for purpose in sorted(destination.purposes)))
    return decide(probe, destination, policy, now)


def decide_all(read: ReadEvent, policy: Policy | None, now: float) -> list[tuple[Destination, Decision]]:
    """Every listed destination's decision for one read (for `policy explain` and the outbox)."""
    if policy is None:
        return []
    return [(dest, decide(read, dest, policy, now)) for dest in policy.destinations]
