"""The egress gate: the last check before a read message goes on the wire.

The decision itself is agent.policy.decision.check_delivery(); the gate applies it to a
stored delivery, audits and purges what it refuses, and is the only code that seals what
it allows into a `Sendable`, the one type a link publishes.

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

import logging
import operator
import threading

from agent.delivery.records import Delivery
from agent.policy.decision import (Decision, Destination, MessageView, Policy, Transport,
                                   check_delivery, message_view, payload_problem)
from agent.provenance.egress import ProvenanceRefused, sendable
from agent.provenance.messages import UnitSigner

log = logging.getLogger(__name__)

# Refusals that keep the delivery queued: with no valid policy (none, not yet valid,
# expired) the outbox holds reads for a policy to come instead of losing them.
HOLD_RULES = frozenset({"default-deny:no-policy", "policy:not-yet-valid", "policy:expired"})
# Payload conformance results remembered (see EgressGate._conformance); a few windows' worth.
CONFORMANCE_CACHE_SIZE = 4096

_SEAL = object()      # only this module holds it: only the gate creates a Sendable


class Sendable(tuple):
    """A read message the egress gate let through, and the only thing a link publishes.

    `message` is the wire bytes; `view` everything else observable about it (topic, QoS,
    retain, expiry, purpose), derived from the destination's view only. Created only by
    EgressGate (the constructor wants the gate module's private seal), so "one egress"
    (DESIGN.md invariant 4) holds by construction: MqttLink.publish() takes nothing else.
    Immutable: a tuple underneath (cheap to build; one is made per message sent).
    """

    __slots__ = ()

    def __new__(cls, seal: object, delivery: Delivery, message: bytes,
                view: MessageView) -> "Sendable":
        if seal is not _SEAL:
            raise TypeError("only the egress gate creates Sendable messages")
        return tuple.__new__(cls, (delivery, message, view))

    delivery = property(operator.itemgetter(0))
    message = property(operator.itemgetter(1))
    view = property(operator.itemgetter(2))

    @property
    def read_id(self) -> str:
        return self[0].read_id


def seal_message(delivery: Delivery, dest: Destination, decision: Decision, policy: Policy,
                 now: float, data: bytes) -> Sendable:
    """Seal one delivery the gate allowed into a Sendable: its wire bytes `data` (signed, and
    sealed where the destination requires it: EgressGate.wire), and what the destination may
    see besides."""
    view = message_view(delivery.read, dest, decision, policy, now, delivery.policy_version)
    return Sendable(_SEAL, delivery, data, view)


class EgressGate:
    """The only code that turns a stored delivery into a Sendable (see module docstring)."""

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
        return self.release(delivery, now, transport)[1]

    def check_for_send(self, delivery: Delivery, now: float,
                       transport: Transport | None = None) -> tuple[Decision, bool]:
        """release() without the message: (decision, still queued)."""
        return self.release(delivery, now, transport)[1:]

    def release(self, delivery: Delivery, now: float, transport: Transport | None = None
                ) -> tuple[Sendable | None, Decision, bool]:
        """(message, decision, queued): the Sendable when `delivery` may go out now over
        `transport`, else None and the refusal, audited, with whether the delivery is still
        queued: held (no valid policy) or, if the copy in hand is stale (fetched before a
        policy change re-minimised or re-bound the queued row), left for the sender to fetch
        and check again. A sender that gets (None, _, True) must not send anything after it
        before it has (order)."""
        policy = self.policy_store.active(now)
        decision = check_delivery(delivery.read, delivery.destination_id, delivery.payload,
                                  delivery.transport_digest, policy, now, transport,
                                  self._conformance)
        if delivery.read.read_id != delivery.read_id:
            decision = Decision(False, frozenset(), "integrity", "delivery and read ids differ")
        if decision.allowed:
            dest = policy.destination(delivery.destination_id)
            data = self.wire(delivery, dest)
            if data is None:        # cannot go out in the form its destination requires
                self.refused += 1
                return None, Decision(False, frozenset(), "provenance",
                                      "the message cannot be signed or sealed as required"), True
            self.passed += 1
            return seal_message(delivery, dest, decision, policy, now, data), decision, True
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
                return None, decision, True
        log.warning("delivery refused dest=%s read_id=%s reason=%s", delivery.destination_id,
                    delivery.read_id, decision.reason)
        self.audit.record("delivery.refused", read_id=delivery.read_id,
                          destination=delivery.destination_id, rule_id=decision.rule_id,
                          reason=decision.reason,
                          policy_version=policy.version if policy else None)
        return None, decision, kept

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

    def _conformance(self, payload_bytes: bytes, decision: Decision,
                     dest: Destination) -> tuple[str, str] | None:
        """payload_problem(), remembered.

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
        result = payload_problem(payload_bytes, decision, dest)
        with self._cache_lock:               # senders of several destinations share it
            cache = self._conformance_cache
            while len(cache) >= CONFORMANCE_CACHE_SIZE:
                del cache[next(iter(cache))]     # oldest first (dicts keep insertion order)
            cache[key] = result
        return result
