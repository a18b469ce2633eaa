"""Helpers that build audit records with the documented field names (docs/audit.md).

Using these rather than hand-written ``record()`` calls keeps the transparency report's
counting rules true: it relies on ``decision`` records carrying exactly these fields.
Plate text, images and HMAC keys never go into the audit log.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from agent import events
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


def expand(event: str, fields: dict) -> Iterator[tuple[str, dict]]:
    """The per-decision / per-delivery records one log record stands for.

    The outbox writes batched forms to keep audit cost per read low (docs/audit.md):
    ``read.accepted`` with a ``decisions`` list (one entry per destination, with the read's
    read_id, hit, policy_version and policy_digest implied), and ``delivery.sent`` with
    ``read_ids`` (one delivery per id, with ``seqs``/``purposes``/``policy_versions`` in the
    same order). This yields the equivalent single records, so counting code sees one
    ``decision`` per decision and one ``delivery.sent`` per delivery whichever form was
    written. Other records are yielded as they are.
    """
    if event == events.READ_ACCEPTED and isinstance(fields.get("decisions"), list):
        yield event, {k: v for k, v in fields.items() if k != "decisions"}
        common = {"read_id": fields.get("read_id"), "hit": fields.get("hit"),
                  "policy_version": fields.get("policy_version"),
                  "policy_digest": fields.get("policy_digest")}
        for entry in fields["decisions"]:
            if isinstance(entry, dict):
                yield events.DECISION, {**common, **entry}
        return
    if event == events.DELIVERY_SENT and isinstance(fields.get("read_ids"), list):
        read_ids = fields["read_ids"]
        columns = {name: fields.get(plural) for name, plural in
                   (("seq", "seqs"), ("purposes", "purposes"), ("policy_version", "policy_versions"))}
        for i, read_id in enumerate(read_ids):
            one = {"read_id": read_id, "destination": fields.get("destination")}
            for name, values in columns.items():
                if isinstance(values, list) and len(values) == len(read_ids):
                    one[name] = values[i]
            yield event, one
        return
    yield event, fields


def records_after(path: Path, seq: int, chunk: int = 1 << 16) -> list[dict]:
    """The records of the log at `path` whose seq is above `seq`, oldest first, read from
    the end of the file (so a start-up check costs what the tail holds, not the whole log).
    A torn last line (killed mid-write) is skipped."""
    out: list[dict] = []
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        end = fh.tell()
        rest = b""
        while end > 0:
            start = max(0, end - chunk)
            fh.seek(start)
            data = fh.read(end - start) + rest
            end = start
            lines = data.split(b"\n")
            rest = lines.pop(0) if start > 0 else b""
            for line in reversed(lines):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if int(record.get("seq", 0)) <= seq:
                    return out[::-1]
                out.append(record)
    return out[::-1]


def expanded_records(path: Path, event: str | None = None) -> list[dict]:
    """Every record of the log at `path`, batched ones expanded (see `expand`), optionally one event.

    Each result is the raw record with its `event` and `fields` replaced by the expanded ones,
    so counting code (tests, the demo) sees one record per decision and per delivery.
    """
    out = []
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        for name, fields in expand(record.get("event"), record.get("fields", {})):
            if event is None or name == event:
                out.append({**record, "event": name, "fields": fields})
    return out
