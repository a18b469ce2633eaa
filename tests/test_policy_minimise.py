"""project_fields: only allowed fields, keyed hash never falls back to clear text, coarse location."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from pathlib import Path

import pytest

from agent.policy.bundle import parse_policy_json
from agent.policy.engine import decide
from agent.policy.errors import PolicyError
from agent.policy.minimise import (
    payload_conforms, payload_fields, payload_purposes, project_fields, snap_location,
)
from agent.reads import HotlistHit, ReadEvent

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
NOW = 1_800_000_000.0


def policy(name: str):
    return parse_policy_json((POLICIES / f"{name}.json").read_bytes())


def make_read(*purposes: str) -> ReadEvent:
    return ReadEvent("AB-123 4", 0.934567, NOW - 30, "cam-7", latitude=41.763712, longitude=-72.685093,
                     plate_crop_jpeg=b"\xff\xd8crop", vehicle_jpeg=b"\xff\xd8car",
                     hits=tuple(HotlistHit(f"l-{p}", 2, p, "src") for p in purposes))


def test_all_fields_for_own_records() -> None:
    p = policy("demo")
    dest = p.destination("county-records")
    r = make_read("stolen_vehicle")
    payload = project_fields(r, decide(r, dest, p, NOW), dest, None)
    assert payload == {
        "plate": "AB-123 4", "confidence": 0.9346, "timestamp": "2027-01-15T07:59:30.000Z",
        "camera_id": "cam-7",
        "location": {"lat": 41.763712, "lon": -72.685093, "precision_m": 0.0},
        "plate_crop": base64.b64encode(b"\xff\xd8crop").decode(), "vehicle_image": base64.b64encode(b"\xff\xd8car").decode(),
        "hits": [{"list_id": "l-stolen_vehicle", "purpose": "stolen_vehicle"}],
    }


def test_keyed_hash_and_no_fallback() -> None:
    p = policy("strict-hits-only")
    dest = p.destinations[0]
    r = make_read("amber_alert")
    d = decide(r, dest, p, NOW)
    assert d.allowed
    key = b"k" * 32
    payload = project_fields(r, d, dest, key)
    assert "plate" not in payload
    assert payload["plate_hmac"] == hmac.new(key, b"AB1234", hashlib.sha256).hexdigest()
    assert set(payload) == {"plate_hmac", "timestamp", "camera_id", "location", "hits"}
    for missing in (None, b""):
        with pytest.raises(PolicyError) as info:
            project_fields(r, d, dest, missing)
        assert info.value.reason == "no_hmac_key"


def test_denied_decision_cannot_be_projected() -> None:
    p = policy("demo")
    dest = p.destination("ice-era")
    r = make_read()
    with pytest.raises(PolicyError, match="denied"):
        project_fields(r, decide(r, dest, p, NOW), dest, None)


def test_hits_only_for_allowed_purposes() -> None:
    p = policy("ct-trust-act")
    dest = p.destination("own-records")
    r = make_read("stolen_vehicle", "immigration_enforcement")
    payload = project_fields(r, decide(r, dest, p, NOW), dest, None)
    assert payload_purposes(payload) == {"stolen_vehicle"}


def test_location_grid() -> None:
    a = snap_location(41.763712, -72.685093, 1000)
    b = snap_location(41.7641, -72.6849, 1000)
    assert a == b and a["precision_m"] == 1000.0
    assert abs(a["lat"] - 41.763712) * 111320 <= 500.1
    assert snap_location(41.0, -72.0, 0) == {"lat": 41.0, "lon": -72.0, "precision_m": 0.0}


def test_missing_optional_data_is_omitted() -> None:
    p = policy("demo")
    dest = p.destination("county-records")
    r = ReadEvent("ABC", 0.5, NOW - 1, "cam")
    assert set(project_fields(r, decide(r, dest, p, NOW), dest, None)) == {"plate", "confidence", "timestamp", "camera_id"}


def test_payload_fields_and_conformance() -> None:
    p = policy("ct-trust-act")
    fusion = p.destination("ct-fusion-center")
    r = make_read("stolen_vehicle")
    d = decide(r, fusion, p, NOW)
    payload = project_fields(r, d, fusion, None)
    assert payload_fields(payload) == {"plate", "confidence", "timestamp", "camera_id", "location"}
    assert payload_fields({"plate_hmac": "x", "schema": "plategate.read/1", "read_id": "r"}) == {"plate"}
    assert payload_fields({"mystery": 1}) == {"mystery"}  # unknown keys fail a subset check
    assert payload_conforms(payload, d, fusion) is None
    # a tighter policy: no location, keyed plate, coarser grid
    tighter_rule = dataclasses.replace(fusion.rule, fields=fusion.rule.fields - {"location"})
    tighter = dataclasses.replace(fusion, rule=tighter_rule)
    d2 = dataclasses.replace(d, fields=tighter_rule.fields)
    assert "location" in payload_conforms(payload, d2, tighter)
    hashed = dataclasses.replace(fusion, rule=dataclasses.replace(fusion.rule, plate_form="hmac_sha256"))
    assert "keyed hash" in payload_conforms(payload, d, hashed)
    coarse = dataclasses.replace(fusion, rule=dataclasses.replace(fusion.rule, location_precision_m=5000))
    assert "precision" in payload_conforms(payload, d, coarse)
    assert "purposes" in payload_conforms(payload, dataclasses.replace(d, purposes=frozenset()), fusion)
    assert payload_conforms(payload, decide(r, fusion, None, NOW), fusion).startswith("denied")
