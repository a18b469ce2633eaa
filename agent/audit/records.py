"""Helpers that build audit records with the documented field names (docs/audit.md).

Using these rather than hand-written ``record()`` calls keeps the transparency report's
counting rules true: it relies on ``decision`` records carrying exactly these fields.
Plate text, images and HMAC keys never go into the audit log.
"""
from __future__ import annotations

from agent.audit import events
from agent.policy.model import Decision, Destination
from agent.reads import ReadEvent


def decision_fields(read: ReadEvent, destination: Destination, decision: Decision) -> dict[str, object]:
    return {
        "read_id": read.read_id, "destination": destination.id, "allowed": decision.allowed,
        "rule_id": decision.rule_id, "reason": decision.reason, "purposes": sorted(decision.purposes),
        "hit": read.is_hit, "dest_class": destination.dest_class,
    }


def record_decision(audit, read: ReadEvent, destination: Destination, decision: Decision) -> None:
    """Audit one decision (allowed or denied); the caller flushes before committing its batch."""
    audit.record(events.DECISION, **decision_fields(read, destination, decision))


def record_read(audit, read: ReadEvent) -> None:
    """Audit that the tracker accepted a read (counted as 'reads seen' in the report)."""
    audit.record(events.READ_ACCEPTED, read_id=read.read_id, camera_id=read.camera_id, hit=read.is_hit,
                 purposes=sorted({h.purpose for h in read.hits}))
