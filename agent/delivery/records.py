"""What the outbox stores and the egress gate checks: a queued delivery, and its codecs.

A Delivery is one read bound for one destination, with the minimised payload that was
computed under a given policy (by digest) and transport. The gate compares those
against the policy active at send time, so they travel with the delivery instead of
being looked up again.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
from typing import NamedTuple

from agent.policy.model import Destination, Transport
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


@functools.lru_cache(maxsize=256)
def transport_digest(transport: Transport) -> str:
    """A stable digest of every field of a Transport: "identical transport" means equal digests."""
    canonical = json.dumps([transport.broker_url, transport.topic, transport.server_key_sha256,
                            transport.ca_pem], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def purpose_for(read: ReadEvent, destination: Destination,
                shared: frozenset[str] = frozenset()) -> str:
    """The purpose code a message carries: the shared hit purposes, else the destination's.

    `shared` is Decision.purposes (the hit purposes this share is for); a non-hit read
    shared under mode "all" carries the destination's declared purposes (sorted,
    comma-joined), which is why it receives reads at all.
    """
    if shared:
        return ",".join(sorted(shared))
    if destination.purposes:
        return ",".join(sorted(destination.purposes))
    return read.hits[0].purpose if read.hits else "unspecified"


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
        "last_seen": read.last_seen, "direction": read.direction,
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
    )


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
