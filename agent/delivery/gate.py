"""The egress gate: the last check before a read message goes on the wire.

Everything upstream (the decision at accept time, the re-check on policy change) could
be stale by the time a queued message is sent: the policy may have been replaced,
revoked or expired, the read may have aged past its rule, the destination's broker or
key pin may have changed. The gate decides again with the policy active *now* and lets
a message through only if

1. a valid policy is active and still lists the destination, and decide() allows it;
2. the delivery was minimised under this policy (same digest), or, if not, the fields
   of the stored payload are a subset of what the fresh decision allows;
3. the transport the message is about to use is the one this policy names for the
   destination (broker URL, topic, CA and key pin: identical).

Refusals are audited ("delivery.refused") and the delivery is purged from the outbox,
except "no valid policy", where the read is held by the outbox re-check instead of
being thrown away (fail closed, reads stay local within retention).
"""
from __future__ import annotations

import json
import logging
import threading

from agent.delivery.records import Delivery, transport_digest
from agent.policy.engine import decide
from agent.policy.minimise import payload_conforms
from agent.policy.model import Decision, Destination, Policy, Transport
from agent.provenance.egress import ProvenanceRefused, sendable
from agent.provenance.messages import UnitSigner

log = logging.getLogger(__name__)

# Refusals that keep the delivery queued: with no valid policy (none, not yet valid,
# expired) the outbox holds reads for a policy to come instead of losing them.
HOLD_RULES = frozenset({"default-deny:no-policy", "policy:not-yet-valid", "policy:expired"})
# Payload conformance results remembered (see EgressGate._conformance); a few windows' worth.
CONFORMANCE_CACHE_SIZE = 4096


_decide = decide
_payload_conforms = payload_conforms


class EgressGate:
    """The only code that hands read messages to a publisher (see module docstring)."""

    def __init__(self, policy_store, audit, outbox=None, signer: UnitSigner | None = None) -> None:
        self.policy_store = policy_store
        self.audit = audit
        self.outbox = outbox
        self.signer = signer              # the unit's key: every read sent is signed with it
        self._wire_refusal: tuple[str, str] | None = None
        self.refused = 0
        self.passed = 0
        self._conformance_cache: dict[tuple, tuple[str, str] | None] = {}
        self._cache_lock = threading.Lock()

    def attach(self, outbox) -> None:
        """Give the gate the outbox it purges refused deliveries from."""
        self.outbox = outbox

    def check(self, delivery: Delivery, now: float, transport: Transport | None = None) -> Decision:
        """Decide whether `delivery` may go out now over `transport` (the link's transport).

        A refusal is audited and the delivery purged (see the module docstring).
        """
        return self.check_for_send(delivery, now, transport)[0]

    def check_for_send(self, delivery: Delivery, now: float,
                       transport: Transport | None = None) -> tuple[Decision, bool]:
        """check(), plus whether a refused delivery is still queued: held (no valid policy)
        or, if the copy in hand is stale (fetched before a policy change re-minimised or
        re-bound the queued row), left for the sender to fetch and check again. A sender
        that gets (refused, True) must not send anything after it before it has (order)."""
        policy = self.policy_store.active(now)
        decision = self._evaluate(delivery, policy, now, transport)
        if decision.allowed:
            self.passed += 1
            return decision, True
        self.refused += 1
        kept = decision.rule_id in HOLD_RULES
        if self.outbox is not None and not kept:
            # Only the copy checked here is purged: a row the policy re-check has re-minimised
            # or re-bound since it was fetched (or has yet to) is an allowed read still.
            if self.outbox.purge_delivery(delivery, f"gate: {decision.reason}",
                                          now) == "changed":
                # Not a decision about the queued row, which the gate checks on its own when
                # the sender fetches it again: logged, not audited (no record per retry).
                log.info("refused copy was stale; queued row kept dest=%s read_id=%s seq=%d "
                         "reason=%s", delivery.destination_id, delivery.read_id, delivery.seq,
                         decision.reason)
                return decision, True
        log.warning("delivery refused dest=%s read_id=%s reason=%s", delivery.destination_id,
                    delivery.read_id, decision.reason)
        self.audit.record("delivery.refused", read_id=delivery.read_id,
                          destination=delivery.destination_id, rule_id=decision.rule_id,
                          reason=decision.reason,
                          policy_version=policy.version if policy else None)
        return decision, kept

    def wire(self, delivery: Delivery, dest: Destination) -> bytes | None:
        """The signed (and, where the policy gives `dest` a key, sealed) message for a delivery
        this gate passed, or None: it cannot go out in that form and stays queued (audited
        once per destination and reason, not once per retry)."""
        try:
            data = sendable(delivery, dest, self.signer)
        except ProvenanceRefused as exc:
            if self._wire_refusal != (dest.id, str(exc)):
                self._wire_refusal = (dest.id, str(exc))
                log.error("delivery held dest=%s read_id=%s reason=%s", dest.id,
                          delivery.read_id, exc)
                self.audit.record("delivery.refused", read_id=delivery.read_id,
                                  destination=dest.id, rule_id="provenance", reason=str(exc))
            return None
        self._wire_refusal = None
        return data

    def _evaluate(self, delivery: Delivery, policy: Policy | None, now: float,
                  transport: Transport | None) -> Decision:
        if policy is None:
            return Decision(False, frozenset(), "default-deny:no-policy",
                            "no valid policy is active")
        dest = policy.destination(delivery.destination_id)
        if dest is None:
            return Decision(False, frozenset(), "not_listed",
                            f"destination {delivery.destination_id} is not in policy "
                            f"v{policy.version}")
        if transport is not None and transport is not dest.transport and transport != dest.transport:
            return Decision(False, frozenset(), "transport",
                            "the link's transport differs from the policy's for this destination")
        if delivery.transport_digest != transport_digest(dest.transport):
            return Decision(False, frozenset(), "transport",
                            "queued under another transport (broker, topic, CA or key pin)")
        if delivery.read.read_id != delivery.read_id:
            return Decision(False, frozenset(), "integrity", "delivery and read ids differ")
        decision = _decide(delivery.read, dest, policy, now)
        if not decision.allowed:
            return decision
        # Checked under every digest: a payload minimised under an older policy passes only
        # if the fresh decision still allows every field it carries, in the form it has
        # (plate clear or hashed, location grid, hit purposes).
        problem = self._conformance(delivery.payload, decision, dest)
        if problem is not None:
            return Decision(False, frozenset(), problem[0], problem[1])
        return decision

    def _conformance(self, payload_bytes: bytes, decision: Decision,
                     dest) -> tuple[str, str] | None:
        """(rule_id, reason) if the stored payload does not conform to `decision`, else None.

        A pure function of the payload bytes and the parts of the decision and rule that
        payload_conforms() reads, so its result is remembered under exactly those: the
        destinations that share a rule share one projection of a read (the outbox stores
        the same bytes for each), and each check after the first is a dictionary look-up.
        """
        rule = dest.rule
        key = (payload_bytes, decision.fields, decision.purposes, rule.plate_form,
               rule.location_precision_m)
        try:
            return self._conformance_cache[key]
        except KeyError:
            pass
        result: tuple[str, str] | None = None
        try:
            payload = json.loads(payload_bytes)
        except ValueError as exc:
            result = ("integrity", f"stored payload unreadable: {exc}")
        else:
            if not isinstance(payload, dict):
                result = ("integrity", "stored payload is not an object")
            else:
                problem = _payload_conforms(payload, decision, dest)
                if problem is not None:
                    result = ("fields", f"stored payload: {problem}")
        with self._cache_lock:               # senders of several destinations share it
            cache = self._conformance_cache
            while len(cache) >= CONFORMANCE_CACHE_SIZE:
                del cache[next(iter(cache))]     # oldest first (dicts keep insertion order)
            cache[key] = result
        return result
