"""Hypothesis strategies for policies, destinations and reads (shared by the property and
round-trip tests)."""
from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from agent.policy.model import (
    DESTINATION_CLASSES, FIELDS, PLATE_FORMS, PURPOSES, RULE_MODES, AllowRule, Declaration, Destination,
    Policy, Prohibitions, Retention, Transport,
)
from agent.reads import HotlistHit, ReadEvent

NOW = 1_800_000_000.0
JURISDICTIONS = ["US-CT", "US-NY", "US-CA", "US-IL", "US-IN"]
SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

classes = st.sampled_from(sorted(DESTINATION_CLASSES))
purposes = st.sampled_from(sorted(PURPOSES))
jurisdictions = st.sampled_from(JURISDICTIONS)
# Hypothesis favours early elements: put the values that let a share through first, so
# allowed decisions (the ones the invariants constrain) are common.
offsets = st.sampled_from([86400 * 30] * 4 + [3600, 5, 6, 1, 0, -1, -3600, -86400 * 30])


@st.composite
def destinations(draw, index: int = 0) -> Destination:
    did = f"dest-{index}-{draw(st.integers(0, 3))}"
    rule = AllowRule(
        id=f"rule-{did}", mode=draw(st.sampled_from(sorted(RULE_MODES))),
        fields=frozenset(draw(st.sets(st.sampled_from(sorted(FIELDS))))),
        plate_form=draw(st.sampled_from(sorted(PLATE_FORMS))),
        location_precision_m=draw(st.sampled_from([0.0, 10.0, 100.0, 1000.0])),
        max_age_s=draw(st.sampled_from([None, 60.0, 3600.0, 86400.0])),
    )
    decl = draw(st.one_of(st.builds(lambda off: Declaration("decl-1", NOW + off), offsets), st.none()))
    return Destination(
        id=did, agency=f"Agency {did}", dest_class=draw(classes), jurisdiction=draw(jurisdictions),
        transport=Transport(f"mqtts://{did}.example:8883", f"plategate/{did}", draw(st.sampled_from(["a" * 64, "b" * 64])), None),
        purposes=frozenset(draw(st.sets(purposes, min_size=1, max_size=5))), declaration=decl, rule=rule,
    )


def maybe_empty(elements, max_size: int):
    """Half the time empty, so that allowed shares are common enough to test."""
    return st.one_of(st.just(frozenset()), st.frozensets(elements, min_size=1, max_size=max_size))


@st.composite
def policies(draw) -> Policy:
    n = draw(st.integers(1, 4))
    dests = []
    seen = set()
    for i in range(n):
        d = draw(destinations(i))
        if d.id not in seen:
            seen.add(d.id)
            dests.append(d)
    # (not_before, expires_at) offsets from NOW; valid windows weighted up.
    nb_off, exp_off = draw(st.sampled_from([(-86400.0, 86400.0 * 365)] * 6 + [
        (-86400.0, -10.0), (-86400.0, 0.0), (-86400.0, 5.0), (-86400.0, 6.0), (5.0, 86400.0), (10.0, 86400.0),
        (0.0, 86400.0), (-1.0, 1.0)]))
    return Policy(
        agency="Test PD", version=draw(st.integers(1, 100)), issued_at=NOW + nb_off - 10,
        not_before=NOW + nb_off, expires_at=NOW + max(exp_off, nb_off + 1), signer_key_id="k", digest="d",
        destinations=tuple(dests),
        prohibitions=Prohibitions(
            classes=draw(maybe_empty(classes, 3)),
            purposes=draw(maybe_empty(purposes, 4)),
            allowed_jurisdictions=draw(maybe_empty(jurisdictions, 3)),
            declaration_required_outside=draw(maybe_empty(jurisdictions, 2)),
            declaration_required_classes=draw(maybe_empty(classes, 2)),
        ),
        retention=Retention(nonhit_max_age_s=draw(st.sampled_from([180.0, 3600.0, 86400.0])),
                            hit_max_age_s=draw(st.sampled_from([3600.0, 86400.0 * 14]))),
    )


@st.composite
def reads(draw) -> ReadEvent:
    hits = tuple(HotlistHit(f"list-{i}", 1, p, "src") for i, p in enumerate(draw(st.lists(purposes, max_size=3))))
    return ReadEvent(
        plate="ZQ" + draw(st.text(alphabet="ABC123- ", max_size=6)), confidence=0.9,
        seen_at=NOW - draw(st.sampled_from([30.0, 0.0, 200.0, 4000.0, 90000.0, -5.0])), camera_id="cam-1",
        latitude=draw(st.one_of(st.none(), st.floats(-80, 80))),
        longitude=draw(st.floats(-179, 179)),
        plate_crop_jpeg=draw(st.sampled_from([None, b"\xff\xd8crop"])),
        vehicle_jpeg=draw(st.sampled_from([None, b"\xff\xd8car"])), hits=hits,
    )


@st.composite
def cases(draw):
    policy = draw(policies())
    kind = draw(st.sampled_from(["listed"] * 6 + ["mutated", "stranger"]))
    if kind == "listed":
        dest = draw(st.sampled_from(policy.destinations))
    elif kind == "mutated":  # same id, different contents: must count as unlisted
        base = draw(st.sampled_from(policy.destinations))
        dest = dataclasses.replace(base, transport=dataclasses.replace(
            base.transport, broker_url="mqtts://attacker.example:8883"))
    else:
        dest = draw(destinations(9))
    return policy, dest, draw(reads()), NOW + draw(st.sampled_from([5.0, 0.0]))
