"""What the outbox stores and the egress gate checks: a queued delivery, and its codecs.

A Delivery is one read bound for one destination, with the minimised payload that was
computed under a given policy (by digest) and transport. The gate compares those
against the policy active at send time, so they travel with the delivery instead of
being looked up again.
"""
from __future__ import annotations

import base64
import json
from typing import NamedTuple

from agent.policy.decision import encode_payload, transport_digest  # noqa: F401 (re-exported)
from agent.reads import Candidate, HotlistHit, ReadEvent

class Delivery(NamedTuple):
    """One queued message: `payload` is the JSON of the allowed fields, nothing else.

    Immutable like the frozen dataclass it was, but a NamedTuple: senders build one per
    message sent, and a frozen dataclass's field-by-field __init__ cost four times as much.
    """

    seq: int                  # outbox order; per destination, lower goes first
    destination_id: str
    read_id: str
    policy_digest: str        # policy the payload was minimised under
    policy_version: int
    transport_digest: str     # transport_digest() of the destination's transport then
    purpose: str
    payload: bytes            # canonical JSON object of project_fields()
    read: ReadEvent           # the full read, so the gate can decide afresh
    created_at: float


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


_READ_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode_read(read: ReadEvent) -> bytes:
    """The full read as JSON bytes (images base64); never parsed with anything but decode_read."""
    return _READ_ENCODER.encode({
        "plate": read.plate, "confidence": read.confidence, "seen_at": read.seen_at,
        "camera_id": read.camera_id, "read_id": read.read_id,
        "latitude": read.latitude, "longitude": read.longitude,
        "candidates": [[c.text, c.confidence] for c in read.candidates],
        "plate_crop_jpeg": _b64(read.plate_crop_jpeg), "vehicle_jpeg": _b64(read.vehicle_jpeg),
        "frames": read.frames,
        "hits": [[h.list_id, h.list_version, h.purpose, h.source] for h in read.hits],
        "last_seen": read.last_seen, "direction": read.direction, "evidence": read.evidence,
    }).encode()


def decode_read(data: bytes) -> ReadEvent:
    obj = json.loads(data)
    return ReadEvent(
        plate=obj["plate"], confidence=obj["confidence"], seen_at=obj["seen_at"],
        camera_id=obj["camera_id"], read_id=obj["read_id"],
        latitude=obj["latitude"], longitude=obj["longitude"],
        candidates=tuple(Candidate(t, c) for t, c in obj["candidates"]),
        plate_crop_jpeg=_unb64(obj["plate_crop_jpeg"]), vehicle_jpeg=_unb64(obj["vehicle_jpeg"]),
        frames=obj["frames"],
        hits=tuple(HotlistHit(a, b, c, d) for a, b, c, d in obj["hits"]),
        last_seen=obj.get("last_seen"), direction=obj.get("direction"),  # absent in rows stored before
        evidence=obj.get("evidence", "frame"),
    )


