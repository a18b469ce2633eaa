"""The policy stage: the whole sharing decision for one read, as pure functions.

Everything the product promises about what leaves the unit is decided here, and only here:

- `decide_read(read, policy, hotlists, hmac_keys, now)` gives, for one read, its hotlist
  hits, the decision for every destination of the policy (or "held" when no valid policy
  is in force), the projected payload bytes of each allowed destination, and the audit
  form of all of it. The outbox calls it when it accepts a read, when it re-checks its
  backlog after a policy change, and when it decides reads it held while no policy was
  valid; it stores what comes back and decides nothing itself.
- `check_delivery(...)` is the egress gate's decision just before the wire: the same
  `decide()` under the policy active *now*, plus the checks a stored payload must pass.
- `message_view(...)` says everything observable about a message besides its payload:
  expiry, purpose user property, topic, QoS, retain. It is computed only from what the
  destination may know (issue 14, item 10): a read that is a hit for a purpose the
  destination may not learn looks exactly like a non-hit (same expiry, same properties).

No I/O, no clock (`now` is passed), no SQLite, no MQTT: tests call these directly. The
delivery package reaches the policy package through this module only (a test checks the
import graph), so the types its signatures use are re-exported here.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from agent.policy.engine import decide, may_receive
from agent.policy.minimise import payload_conforms, project_fields
from agent.policy.model import Decision, Destination, Policy, Retention, Transport
from agent.policy.schema import is_loopback_host
from agent.policy.topics import validate_topic
from agent.reads import HotlistHit, ReadEvent

__all__ = [
    "Decision", "Destination", "HotlistMatcher", "MessageView", "Plan", "Policy", "ReadDecision",
    "Retention", "Transport", "check_delivery", "decide_read", "encode_payload", "is_loopback_host",
    "may_receive", "message_view", "purpose_for", "transport_digest", "valid_policy",
    "validate_topic",
]

log = logging.getLogger(__name__)

QOS = 1             # every read message: at least once, receivers drop duplicates by read id
RETAIN = False      # a read is an event, never a retained state


class HotlistMatcher(Protocol):
    def match(self, plate: str, now: float) -> tuple[HotlistHit, ...]: ...


class Plan(NamedTuple):
    """One destination's outcome for one read. `payload` is b"" when denied.

    NamedTuples, not frozen dataclasses, for the per-read and per-message types here: as
    immutable, and a quarter of the cost to build (this runs for every read and message).
    """

    destination: Destination
    decision: Decision
    payload: bytes
    purpose: str                # the purpose user property the message carries
    transport_digest: str       # the transport the payload may travel over


class ReadDecision(NamedTuple):
    """decide_read()'s answer: the read (hotlist hits applied), the valid policy it was
    decided under (None: no valid policy, the read is held), and one Plan per destination."""

    read: ReadEvent
    policy: Policy | None
    plans: tuple[Plan, ...]

    @property
    def held(self) -> bool:
        return self.policy is None

    @property
    def allowed(self) -> tuple[Plan, ...]:
        return tuple(p for p in self.plans if p.decision.allowed)

    @property
    def keep(self) -> bool:
        """Whether the read must be stored: held for a policy to come, or queued for someone."""
        return self.held or any(p.decision.allowed for p in self.plans)

    def entries_key(self) -> tuple:
        """Equal for every read whose audit entries are equal (e.g. all non-hits under one
        policy), so their encoding can be cached by the caller."""
        if self.policy is None:
            return (None, tuple(sorted({h.purpose for h in self.read.hits})))
        return (self.policy.digest, tuple((p.destination.id, p.destination.dest_class, p.decision)
                                          for p in self.plans))

    def entries(self) -> list[dict]:
        """The audit form of the decisions: one entry per destination of the policy, or one
        "no policy" entry (the read is held)."""
        if self.policy is None:
            return [{"destination": None, "allowed": False, "rule_id": "default-deny:no-policy",
                     "reason": "no valid policy; read held locally",
                     "purposes": sorted({h.purpose for h in self.read.hits}), "fields": []}]
        return [{"destination": p.destination.id, "allowed": p.decision.allowed,
                 "rule_id": p.decision.rule_id, "reason": p.decision.reason,
                 "purposes": sorted(p.decision.purposes), "dest_class": p.destination.dest_class,
                 "fields": sorted(p.decision.fields)} for p in self.plans]

    def accepted_fields(self) -> dict:
        """The fields of the `read.accepted` audit record, `decisions` excepted (the caller
        adds entries(), encoded once per entries_key())."""
        read, policy = self.read, self.policy
        return {"read_id": read.read_id, "camera_id": read.camera_id, "hit": read.is_hit,
                "purposes": sorted({h.purpose for h in read.hits}), "held": policy is None,
                "destinations": [p.destination.id for p in self.plans if p.decision.allowed],
                "policy_version": policy.version if policy else None,
                "policy_digest": policy.digest if policy else None}


class MessageView(NamedTuple):
    """Everything observable about a read message besides its payload bytes."""

    topic: str
    qos: int
    retain: bool
    expiry_s: int               # MQTT 5 Message Expiry Interval
    purpose: str
    policy_version: int


def valid_policy(policy: Policy | None, now: float) -> Policy | None:
    """The policy if it is in force at `now`; None (fail closed, hold reads) otherwise."""
    if policy is None or now < policy.not_before or now >= policy.expires_at:
        return None
    return policy


def decide_read(read: ReadEvent, policy: Policy | None, hotlists: HotlistMatcher | None,
                hmac_keys: Mapping[str, bytes], now: float) -> ReadDecision:
    """The whole decision for one read (see the module docstring).

    `hotlists` matches the plate when the read carries no hits yet (at acceptance); pass
    None to decide a stored read again with the hits it was accepted with. A read whose
    text no frame vouched for (`ReadEvent.text_is_sure`) is matched against no hotlist.
    Destinations whose rules cut the read the same way share one projection.
    """
    if hotlists is not None and not read.hits and read.text_is_sure:
        hits = hotlists.match(read.plate, now)
        if hits:
            read = dataclasses.replace(read, hits=hits)
    policy = valid_policy(policy, now)
    if policy is None:
        return ReadDecision(read, None, ())
    payloads: dict[tuple, bytes] = {}
    digests = _transport_digests(policy)
    plans = tuple([_plan(read, dest, policy, hmac_keys, now, payloads, digests[dest.id])
                   for dest in policy.destinations])
    return ReadDecision(read, policy, plans)


_DIGEST_TABLES: dict[int, tuple[Policy, dict[str, str]]] = {}


def _transport_digests(policy: Policy) -> dict[str, str]:
    """transport_digest() of each destination of `policy`, computed once per policy object
    (hashing a Transport on every read cost more than the lookup it saved). Keyed by the
    object's id, with the object kept alive in the cache so the id cannot be reused."""
    entry = _DIGEST_TABLES.get(id(policy))
    if entry is None or entry[0] is not policy:
        if len(_DIGEST_TABLES) >= 16:
            _DIGEST_TABLES.clear()
        entry = (policy, {d.id: transport_digest(d.transport) for d in policy.destinations})
        _DIGEST_TABLES[id(policy)] = entry
    return entry[1]


def _plan(read: ReadEvent, dest: Destination, policy: Policy, hmac_keys: Mapping[str, bytes],
          now: float, payloads: dict[tuple, bytes], tdigest: str) -> Plan:
    decision = decide(read, dest, policy, now)
    payload = b""
    if decision.allowed:
        rule = dest.rule
        key = hmac_keys.get(dest.id) if rule.plate_form != "clear" else None
        # Everything project_fields() reads besides the read itself.
        cache_key = (decision.fields & rule.fields, rule.plate_form, key,
                     rule.location_precision_m, decision.purposes)
        payload = payloads.get(cache_key, b"")
        if not payload:
            try:
                payload = encode_payload(project_fields(read, decision, dest,
                                                        hmac_keys.get(dest.id)))
            except ValueError as exc:   # PolicyError, e.g. no_hmac_key: fail closed here
                reason = getattr(exc, "reason", "projection_failed")
                log.error("projection refused read_id=%s dest=%s reason=%s", read.read_id,
                          dest.id, reason)
                decision = Decision(False, frozenset(), decision.rule_id, f"projection: {reason}")
            else:
                payloads[cache_key] = payload
    return Plan(dest, decision, payload, _purpose(dest.purposes, decision.purposes), tdigest)


def check_delivery(read: ReadEvent, destination_id: str, payload: bytes, queued_transport: str,
                   policy: Policy | None, now: float, transport: Transport | None = None,
                   conforms=None) -> Decision:
    """The egress gate's decision for one stored delivery just before the wire.

    Allowed only if a valid policy still lists the destination, the link's `transport` and
    the transport the delivery was queued under are the policy's, decide() allows the read
    now, and the stored payload is within that fresh decision (fields, plate form, location
    grid, hit purposes), whatever policy it was projected under. `conforms` may replace
    payload_problem() with a cached equivalent.
    """
    if policy is None:
        return Decision(False, frozenset(), "default-deny:no-policy", "no valid policy is active")
    dest = policy.destination(destination_id)
    if dest is None:
        return Decision(False, frozenset(), "not_listed",
                        f"destination {destination_id} is not in policy v{policy.version}")
    if transport is not None and transport is not dest.transport and transport != dest.transport:
        return Decision(False, frozenset(), "transport",
                        "the link's transport differs from the policy's for this destination")
    if queued_transport != transport_digest(dest.transport):
        return Decision(False, frozenset(), "transport",
                        "queued under another transport (broker, topic, CA or key pin)")
    decision = decide(read, dest, policy, now)
    if not decision.allowed:
        return decision
    problem = (conforms or payload_problem)(payload, decision, dest)
    if problem is not None:
        return Decision(False, frozenset(), problem[0], problem[1])
    return decision


def payload_problem(payload_bytes: bytes, decision: Decision,
                    dest: Destination) -> tuple[str, str] | None:
    """(rule_id, reason) if a stored payload does not conform to `decision`, else None."""
    try:
        payload = json.loads(payload_bytes)
    except ValueError as exc:
        return ("integrity", f"stored payload unreadable: {exc}")
    if not isinstance(payload, dict):
        return ("integrity", "stored payload is not an object")
    problem = payload_conforms(payload, decision, dest)
    return None if problem is None else ("fields", f"stored payload: {problem}")


def message_view(read: ReadEvent, dest: Destination, decision: Decision, policy: Policy,
                 now: float, policy_version: int | None = None) -> MessageView:
    """What a message shows besides its payload, from the destination's view only.

    The expiry is what is left of the retention this destination may know applies: the
    hit retention only when the decision shares the read's hit purposes with it
    (`decision.purposes`), the non-hit retention otherwise, even when the read is a hit
    for some other purpose; never longer than the rule's max age. `policy_version` is the
    version the payload was minimised under (default: `policy`'s).
    """
    retention = policy.retention
    limit = retention.hit_max_age_s if decision.purposes else retention.nonhit_max_age_s
    if dest.rule.max_age_s is not None:
        limit = min(limit, dest.rule.max_age_s)
    expiry = limit - (now - read.seen_at)
    expiry_s = 1 if expiry <= 1 else min(int(-(-expiry // 1)), 2**32 - 1)
    return MessageView(dest.transport.topic, QOS, RETAIN, expiry_s,
                       _purpose(dest.purposes, decision.purposes),
                       policy.version if policy_version is None else policy_version)


def purpose_for(destination: Destination, shared: frozenset[str] = frozenset()) -> str:
    """The purpose a message carries: the shared hit purposes, else the destination's own.

    `shared` is Decision.purposes (the hit purposes this share is for); a read shared under
    mode "all" without them carries the destination's declared purposes (sorted,
    comma-joined), which is why it receives reads at all. Never the read's own hits: a hit
    the destination may not learn of must not show in its messages.
    """
    return _purpose(destination.purposes, shared)


@functools.lru_cache(maxsize=256)
def _purpose(declared: frozenset[str], shared: frozenset[str]) -> str:
    if shared:
        return ",".join(sorted(shared))
    if declared:
        return ",".join(sorted(declared))
    return "unspecified"


@functools.lru_cache(maxsize=256)
def transport_digest(transport: Transport) -> str:
    """A stable digest of every field of a Transport: "identical transport" means equal digests."""
    canonical = json.dumps([transport.broker_url, transport.topic, transport.server_key_sha256,
                            transport.ca_pem], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (frozenset, set, tuple)):
        return sorted(value) if isinstance(value, (frozenset, set)) else list(value)
    raise TypeError(f"payload value of type {type(value).__name__} is not JSON-serialisable")


# Built once: json.dumps() with options constructs a new encoder on every call.
_PAYLOAD_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=_json_default)


def encode_payload(payload: dict) -> bytes:
    """Canonical JSON of a projected payload (sorted keys; bytes as base64)."""
    return _PAYLOAD_ENCODER.encode(payload).encode()
