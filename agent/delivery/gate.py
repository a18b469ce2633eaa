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
from agent.delivery.records import Delivery, transport_digest
from agent.policy.model import Decision, Policy, Transport

log = logging.getLogger(__name__)

# Refusals that keep the delivery queued: with no valid policy (none, not yet valid,
# expired) the outbox holds reads for a policy to come instead of losing them.
HOLD_RULES = frozenset({"default-deny:no-policy", "policy:not-yet-valid", "policy:expired"})


def _decide(read, destination, policy, now) -> Decision:
    from agent.policy.engine import decide
    return decide(read, destination, policy, now)


def _payload_conforms(payload: dict, decision: Decision, destination) -> str | None:
    from agent.policy.minimise import payload_conforms
    return payload_conforms(payload, decision, destination)


class EgressGate:
    """The only code that hands read messages to a publisher (see module docstring)."""

    def __init__(self, policy_store, audit, outbox=None) -> None:
        self.policy_store = policy_store
        self.audit = audit
        self.outbox = outbox
        self.refused = 0
        self.passed = 0

    def attach(self, outbox) -> None:
        """Give the gate the outbox it purges refused deliveries from."""
        self.outbox = outbox

    def check(self, delivery: Delivery, now: float, transport: Transport | None = None) -> Decision:
        """Decide whether `delivery` may go out now over `transport` (the link's transport).

        A refusal is audited and the delivery purged (see the module docstring).
        """
        policy = self.policy_store.active(now)
        decision = self._evaluate(delivery, policy, now, transport)
        if decision.allowed:
            self.passed += 1
            return decision
        self.refused += 1
        log.warning("delivery refused dest=%s read_id=%s reason=%s", delivery.destination_id,
                    delivery.read_id, decision.reason)
        self.audit.record("delivery.refused", read_id=delivery.read_id,
                          destination=delivery.destination_id, rule_id=decision.rule_id,
                          reason=decision.reason,
                          policy_version=policy.version if policy else None)
        if self.outbox is not None and decision.rule_id not in HOLD_RULES:
            self.outbox.purge_delivery(delivery, f"gate: {decision.reason}", now)
        return decision

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
        if transport is not None and transport != dest.transport:
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
        try:
            payload = json.loads(delivery.payload)
        except ValueError as exc:
            return Decision(False, frozenset(), "integrity", f"stored payload unreadable: {exc}")
        if not isinstance(payload, dict):
            return Decision(False, frozenset(), "integrity", "stored payload is not an object")
        # Checked under every digest: a payload minimised under an older policy passes only
        # if the fresh decision still allows every field it carries, in the form it has
        # (plate clear or hashed, location grid, hit purposes).
        problem = _payload_conforms(payload, decision, dest)
        if problem is not None:
            return Decision(False, frozenset(), "fields", f"stored payload: {problem}")
        return decision
