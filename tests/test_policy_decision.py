"""The policy stage as a pure function: no SQLite, no MQTT, no clock, no files.

decide_read() is what the outbox stores on accept, re-check and re-decision of held reads;
message_view() is everything a message shows besides its payload. Issue 14 item 10: a read
that is a hit for a purpose a destination may not learn of must look, to that destination,
exactly like a non-hit.
"""
from __future__ import annotations

import dataclasses
import json
import sys

from agent.policy.decision import (check_delivery, decide_read, message_view, transport_digest,
                                   valid_policy)
from agent.policy.schema import policy_from_dict
from agent.reads import HotlistHit, ReadEvent
from helpers.soak import destination_doc, policy_doc

NOW = 1_800_000_000.0
BROKER = "mqtts://192.0.2.10:8883"
PIN = "ab" * 32
IMMIGRATION = HotlistHit("ice-list", 3, "immigration_enforcement", "federal")
STOLEN = HotlistHit("stolen-ct", 7, "stolen_vehicle", "NCIC")


class Hotlists:
    """A hotlist matcher over a fixed table (the real HotlistStore has the same method)."""

    def __init__(self, table: dict[str, tuple[HotlistHit, ...]]) -> None:
        self.table = table

    def match(self, plate: str, now: float) -> tuple[HotlistHit, ...]:
        return self.table.get(plate, ())


def policy(*dests: dict, **kwargs):
    return policy_from_dict(policy_doc(4, dests, NOW, **kwargs), signer_key_id="k" * 16,
                            digest="d" * 64)


def state_policy():
    """A state destination that gets every read but may learn only of stolen-vehicle hits;
    an immigration agency that is listed but prohibited."""
    return policy(destination_doc("state", BROKER, "t/state", purposes=["stolen_vehicle"], pin=PIN,
                                  dest_class="state_police", max_age_s=None),
                  destination_doc("ice", BROKER, "t/ice", dest_class="federal_immigration", pin=PIN,
                                  purposes=["immigration_enforcement"]),
                  prohibited_classes=["federal_immigration"],
                  prohibited_purposes=["immigration_enforcement"],
                  nonhit_max_age_minutes=60, hit_max_age_days=7)


def read(plate: str, read_id: str, seen_at: float = NOW - 5) -> ReadEvent:
    return ReadEvent(plate, 0.9, seen_at, "cam-1", read_id=read_id, latitude=41.7,
                     longitude=-72.6)


def _imports_of(module: str, seen: set[str]) -> set[str]:
    """Every module `module` imports, following agent.* modules (from the source's AST)."""
    import ast
    import importlib.util
    if module in seen:
        return set()
    seen.add(module)
    spec = importlib.util.find_spec(module)
    tree = ast.parse(open(spec.origin).read())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    for name in list(found):
        if name.startswith("agent."):
            found |= _imports_of(name, seen)
    return found


def test_the_decision_needs_no_sqlite_and_no_mqtt():
    imported = _imports_of("agent.policy.decision", set())
    assert not {name for name in imported
                if name.split(".")[0] in ("sqlite3", "paho", "socket", "ssl")}
    assert not {name for name in imported if name.startswith("agent.delivery")}


def test_decide_read_matches_hotlists_decides_and_projects():
    pol = state_policy()
    hotlists = Hotlists({"HIT1": (STOLEN,)})
    decided = decide_read(read("HIT1", "a"), pol, hotlists, {}, NOW)
    assert decided.read.hits == (STOLEN,) and not decided.held and decided.keep
    (state,) = decided.allowed
    assert state.destination.id == "state" and state.purpose == "stolen_vehicle"
    payload = json.loads(state.payload)
    assert payload["plate"] == "HIT1" and payload["hits"] == [{"list_id": "stolen-ct",
                                                               "purpose": "stolen_vehicle"}]
    assert state.transport_digest == transport_digest(state.destination.transport)
    ice = next(p for p in decided.plans if p.destination.id == "ice")
    assert not ice.decision.allowed and ice.payload == b""
    entries = decided.entries()
    assert [(e["destination"], e["allowed"]) for e in entries] == [("state", True), ("ice", False)]
    assert decided.accepted_fields()["destinations"] == ["state"]


def test_a_read_whose_text_no_frame_vouched_for_matches_no_hotlist():
    """A "detection" event (issue 16: the detector followed the plate, no text passed the
    cut) is still decided and shared by the policy, but its best-guess text never raises a
    hit: the destination that gets every read gets it as a plain read, without hits."""
    pol = state_policy()
    hotlists = Hotlists({"HIT1": (STOLEN,)})
    guess = dataclasses.replace(read("HIT1", "g"), confidence=0.3, evidence="detection")
    decided = decide_read(guess, pol, hotlists, {}, NOW)
    assert decided.read.hits == () and not decided.held
    (state,) = decided.allowed
    assert "hits" not in json.loads(state.payload)
    for evidence in ("frame", "agreement"):
        sure = dataclasses.replace(guess, evidence=evidence)
        assert decide_read(sure, pol, hotlists, {}, NOW).read.hits == (STOLEN,)


def test_no_valid_policy_holds_the_read():
    pol = state_policy()
    for active in (None, policy_from_dict(policy_doc(1, [], NOW - 10**8, valid_for_s=10),
                                          signer_key_id="k" * 16, digest="e" * 64)):
        decided = decide_read(read("ABC", "b"), active, None, {}, NOW)
        assert decided.held and decided.keep and decided.plans == ()
        assert decided.entries()[0]["rule_id"] == "default-deny:no-policy"
    assert valid_policy(pol, NOW) is pol and valid_policy(pol, pol.expires_at) is None


def test_stored_hits_are_kept_when_decided_again():
    """Re-decision (held reads, re-checks) passes no matcher: the hits are the accepted ones."""
    hit = ReadEvent("XYZ", 0.9, NOW - 5, "cam-1", read_id="c", hits=(STOLEN,))
    decided = decide_read(hit, state_policy(), None, {}, NOW)
    assert decided.read.hits == (STOLEN,)
    assert json.loads(decided.allowed[0].payload)["hits"][0]["purpose"] == "stolen_vehicle"


def test_keyed_plate_without_a_key_fails_closed():
    pol = policy(destination_doc("city", BROKER, "t/c", plate_form="hmac_sha256", pin=PIN))
    decided = decide_read(read("ABC", "d"), pol, None, {}, NOW)
    assert decided.allowed == () and not decided.keep
    assert decided.plans[0].decision.reason == "projection: no_hmac_key"
    keyed = decide_read(read("ABC", "d"), pol, None, {"city": b"k" * 32}, NOW)
    assert set(json.loads(keyed.allowed[0].payload)) >= {"plate_hmac"}


def _message(read_event: ReadEvent, hotlists, now: float):
    """Everything observable about the message the state destination gets for a read."""
    pol = state_policy()
    decided = decide_read(read_event, pol, hotlists, {}, now)
    (plan,) = decided.allowed
    dest = plan.destination
    gate_decision = check_delivery(decided.read, dest.id, plan.payload, plan.transport_digest,
                                   pol, now, dest.transport)
    assert gate_decision.allowed
    view = message_view(decided.read, dest, gate_decision, pol, now)
    return decided, json.loads(plan.payload), view


def test_hidden_hit_looks_exactly_like_a_non_hit():
    """Issue 14 item 10: the immigration hit changes nothing the state destination sees."""
    hotlists = Hotlists({"HID1": (IMMIGRATION,)})
    hidden, hidden_payload, hidden_view = _message(read("HID1", "h", NOW - 30), hotlists, NOW)
    plain, plain_payload, plain_view = _message(read("PLN1", "p", NOW - 30), hotlists, NOW)
    assert hidden.read.is_hit and not plain.read.is_hit
    assert hidden_view == plain_view                      # topic, qos, retain, expiry, purpose
    assert hidden_view.expiry_s == 3600 - 30              # the non-hit retention, not 7 days
    assert set(hidden_payload) == set(plain_payload) and "hits" not in hidden_payload
    # The plan's purpose property too, and the audit keeps the truth.
    assert hidden.allowed[0].purpose == plain.allowed[0].purpose == "stolen_vehicle"
    assert hidden.accepted_fields()["hit"] is True


def test_hidden_hit_is_not_sent_past_the_non_hit_age():
    """A read older than any non-hit the destination could get would give the hit away."""
    pol = state_policy()
    old = NOW - 2 * 3600
    decided = decide_read(read("HID1", "h", old), pol, Hotlists({"HID1": (IMMIGRATION,)}), {}, NOW)
    plain = decide_read(read("PLN1", "p", old), pol, None, {}, NOW)
    assert decided.allowed == () and plain.allowed == ()
    state = next(p for p in decided.plans if p.destination.id == "state")
    assert state.decision.rule_id == "retention:expired"


def test_shared_hit_keeps_the_hit_retention():
    hotlists = Hotlists({"STL1": (STOLEN,)})
    decided, payload, view = _message(read("STL1", "s", NOW - 2 * 3600), hotlists, NOW)
    assert payload["hits"][0]["purpose"] == "stolen_vehicle"
    assert view.expiry_s == 7 * 86400 - 2 * 3600


# --- property: a hidden hit changes nothing a destination sees --------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from helpers.policy_strategies import policies, purposes, reads  # noqa: E402


@settings(max_examples=100, deadline=None, database=None)
@given(policy=policies(), read=reads(), hidden=st.lists(purposes, min_size=1, max_size=3))
def test_hidden_hits_change_nothing_any_destination_sees(policy, read, hidden):
    """For every destination of random policies: adding hits for purposes it may not learn
    of leaves its decision, its payload and every property of its message as they were
    (issue 14 item 10; property form of the broker test in test_message_metadata.py)."""
    now = NOW
    plain = decide_read(ReadEvent(read.plate, read.confidence, read.seen_at, read.camera_id,
                                  read_id="x", latitude=read.latitude, longitude=read.longitude),
                        policy, None, {d.id: b"k" * 32 for d in policy.destinations}, now)
    for plan in plain.plans:
        dest = plan.destination
        prohibited = policy.prohibitions.purposes
        secret = [p for p in hidden if p not in dest.purposes or p in prohibited]
        if not secret:
            continue
        hit_read = ReadEvent(read.plate, read.confidence, read.seen_at, read.camera_id,
                             read_id="x", latitude=read.latitude, longitude=read.longitude,
                             hits=tuple(HotlistHit(f"l{i}", 1, p, "s") for i, p in enumerate(secret)))
        with_hit = decide_read(hit_read, policy, None, {d.id: b"k" * 32 for d in policy.destinations},
                               now)
        other = next(p for p in with_hit.plans if p.destination.id == dest.id)
        if policy.retention.hit_max_age_s >= policy.retention.nonhit_max_age_s:
            assert other.decision.allowed == plan.decision.allowed
        if plan.decision.allowed and other.decision.allowed:
            assert other.payload == plan.payload and other.purpose == plan.purpose
            assert (message_view(hit_read, dest, other.decision, policy, now)
                    == message_view(plain.read, dest, plan.decision, policy, now))
