"""Build the payload a destination may see: only the fields its rule allows.

The read event carries everything; this is the one place that cuts it down per destination
(DESIGN.md invariant 6). It never adds a field the decision does not list, never falls back
to clear text when a keyed hash was asked for, and coarsens the location to the rule's grid
so a precision of 500 m really hides the position inside a 500 m cell.

Keyed hash: ``plate_hmac`` is hex HMAC-SHA256(key, normalise_plate(plate)) with the
destination's own key (from the device config, never from the policy, which is not secret),
so two destinations can't join their data on the hash and a recipient holding the key can
match its own hashed hotlist.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import math
from datetime import datetime, timezone

from agent.policy.errors import PolicyError
from agent.policy.model import FIELDS, Decision, Destination
from agent.policy.plates import normalise_plate
from agent.reads import ReadEvent

METRES_PER_DEGREE = 111_320.0

# Payload key -> the FIELDS name that allows it.
_KEY_TO_FIELD = {
    "plate": "plate", "plate_hmac": "plate", "plate_crop": "plate_crop",
    "vehicle_image": "vehicle_image", "confidence": "confidence", "timestamp": "timestamp",
    "camera_id": "camera_id", "location": "location",
}
# Keys that are not read data: "hits" is governed by Decision.purposes (see payload_purposes),
# the rest are envelope keys the delivery stage adds.
METADATA_KEYS = frozenset({"hits", "schema", "read_id", "policy_digest", "destination", "sent_at"})


def plate_hmac(plate: str, key: bytes) -> str:
    return hmac.new(key, normalise_plate(plate).encode("utf-8"), hashlib.sha256).hexdigest()


def snap_location(lat: float, lon: float, precision_m: float) -> dict[str, float]:
    """Snap to the centre-ish grid point of a ``precision_m`` grid (0 = as measured)."""
    if precision_m <= 0:
        return {"lat": round(lat, 6), "lon": round(lon, 6), "precision_m": 0.0}
    lat_step = precision_m / METRES_PER_DEGREE
    snapped_lat = round(lat / lat_step) * lat_step
    cos_lat = max(math.cos(math.radians(snapped_lat)), 1e-6)
    lon_step = precision_m / (METRES_PER_DEGREE * cos_lat)
    snapped_lon = round(lon / lon_step) * lon_step
    return {"lat": round(snapped_lat, 6), "lon": round(snapped_lon, 6), "precision_m": float(precision_m)}


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def project_fields(read: ReadEvent, decision: Decision, destination: Destination,
                   hmac_key: bytes | None) -> dict[str, object]:
    """The JSON-ready payload for one allowed (read, destination); raises PolicyError if denied."""
    if not decision.allowed:
        raise PolicyError("denied", f"read {read.read_id} may not go to {destination.id!r} "
                                    f"({decision.rule_id})")
    rule = destination.rule
    fields = decision.fields & rule.fields & FIELDS
    out: dict[str, object] = {}
    if "plate" in fields:
        if rule.plate_form == "clear":
            out["plate"] = read.plate
        elif rule.plate_form == "hmac_sha256":
            if not hmac_key:
                raise PolicyError("no_hmac_key", f"destination {destination.id!r} requires a keyed plate "
                                                 f"hash but no HMAC key is configured for it")
            out["plate_hmac"] = plate_hmac(read.plate, hmac_key)
        else:
            raise PolicyError("schema", f"destination {destination.id!r} has unknown plate_form "
                                        f"{rule.plate_form!r}")
    if "confidence" in fields:
        out["confidence"] = round(float(read.confidence), 4)
    if "timestamp" in fields:
        out["timestamp"] = iso_utc(read.seen_at)
    if "camera_id" in fields:
        out["camera_id"] = read.camera_id
    if "location" in fields and read.latitude is not None and read.longitude is not None:
        out["location"] = snap_location(read.latitude, read.longitude, rule.location_precision_m)
    if "plate_crop" in fields and read.plate_crop_jpeg:
        out["plate_crop"] = base64.b64encode(read.plate_crop_jpeg).decode("ascii")
    if "vehicle_image" in fields and read.vehicle_jpeg:
        out["vehicle_image"] = base64.b64encode(read.vehicle_jpeg).decode("ascii")
    hits = [{"list_id": h.list_id, "purpose": h.purpose} for h in read.hits if h.purpose in decision.purposes]
    if hits:
        out["hits"] = hits
    return out


def payload_fields(payload: dict) -> frozenset[str]:
    """FIELDS names a stored payload uses. Unknown keys are returned as themselves, so a
    ``payload_fields(p) <= decision.fields`` check fails closed on anything unexpected."""
    return frozenset(_KEY_TO_FIELD.get(key, key) for key in payload if key not in METADATA_KEYS)


def payload_purposes(payload: dict) -> frozenset[str]:
    """Hit purposes a stored payload discloses (compare with ``Decision.purposes``)."""
    hits = payload.get("hits") or []
    return frozenset(h.get("purpose", "") if isinstance(h, dict) else "" for h in hits)


def payload_conforms(payload: dict, decision: Decision, destination: Destination) -> str | None:
    """None if a stored payload is still within a fresh decision, else why not.

    For the egress gate: besides the field set, checks the plate form, the location grid
    and the hit purposes, since a policy change can tighten any of them.
    """
    if not decision.allowed:
        return f"denied: {decision.rule_id}"
    extra = payload_fields(payload) - decision.fields
    if extra:
        return f"fields not allowed: {sorted(extra)}"
    rule = destination.rule
    if "plate" in payload and rule.plate_form != "clear":
        return "clear plate where the rule requires a keyed hash"
    if "plate_hmac" in payload and rule.plate_form != "hmac_sha256":
        return "keyed plate hash where the rule requires clear text"
    loc = payload.get("location")
    if loc is not None:
        if not isinstance(loc, dict) or float(loc.get("precision_m", -1)) < rule.location_precision_m:
            return "location finer than the rule's precision"
    extra_purposes = payload_purposes(payload) - decision.purposes
    if extra_purposes:
        return f"hit purposes not allowed: {sorted(extra_purposes)}"
    return None
