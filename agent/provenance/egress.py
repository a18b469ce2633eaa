"""The wire form of a delivery the egress gate has passed: signed, and sealed where required.

The gate calls `sendable()` for every message it hands to a publisher. It refuses (raises
ProvenanceRefused, and the delivery stays queued) rather than ever sending a read unsigned,
or in clear to a destination whose policy entry carries a sealing key.
"""
from __future__ import annotations

from agent.policy.model import Destination
from agent.provenance.messages import UnitSigner, is_sealed, wire_message


class ProvenanceRefused(RuntimeError):
    """A delivery that cannot go out in the form its destination requires."""


def sendable(delivery, destination: Destination, signer: UnitSigner | None) -> bytes:
    """The message bytes for `delivery` (a delivery.records.Delivery) to `destination`."""
    if signer is None:
        raise ProvenanceRefused("no unit signing key: reads are never sent unsigned")
    if delivery.destination_id != destination.id:
        raise ProvenanceRefused(f"delivery for {delivery.destination_id!r} checked against "
                                f"{destination.id!r}")
    sealing = destination.sealing
    try:
        message = wire_message(signer, delivery.destination_id, delivery.read_id,
                               delivery.purpose, delivery.policy_version, delivery.payload,
                               seal_to=sealing.public_key if sealing else None,
                               routing_fields=sealing.routing_metadata if sealing else frozenset())
    except ValueError as exc:            # e.g. a sealing key HPKE cannot use
        raise ProvenanceRefused(f"cannot seal for {destination.id!r}: {exc}") from exc
    if sealing is not None and not (message.sealed and is_sealed(message.data)):
        raise ProvenanceRefused(f"destination {destination.id!r} requires sealed reads; "
                                f"refusing to send one in clear")
    return message.data
