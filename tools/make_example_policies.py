#!/usr/bin/env python3
"""Regenerate the example policy bundles in firmware_config/policies/ (deterministically).

The keys are TEST keys derived from fixed seeds, so running this twice gives byte-identical
keys, JSON and bundles (Ed25519 signatures are deterministic). Every policy expires on
2036-01-01 so tests that load them do not rot. Never deploy these keys: anyone with this
repository can sign a policy with them.

    .venv/bin/python tools/make_example_policies.py [--out firmware_config/policies]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.policy.bundle import sign_bundle  # noqa: E402
from agent.policy.hotlist import sign_hotlist  # noqa: E402
from agent.policy.signing import key_id, private_pem, public_pem  # noqa: E402

ISSUED = "2026-01-01T00:00:00Z"
EXPIRES = "2036-01-01T00:00:00Z"
FIELDS_ALL = ["plate", "plate_crop", "vehicle_image", "confidence", "timestamp", "camera_id", "location"]
FIELDS_HIT = ["plate", "confidence", "timestamp", "camera_id", "location"]
PROHIBITED_PURPOSES = ["immigration_enforcement", "reproductive_health_care", "first_amendment_activity"]
HIT_PURPOSES = ["stolen_vehicle", "amber_alert", "silver_alert", "felony_warrant", "missing_person"]
LOCAL_PURPOSES = ["records_retention", "stolen_vehicle", "amber_alert", "silver_alert", "felony_warrant",
                  "homicide_investigation", "missing_person", "violent_crime_investigation"]
# Placeholder pin (SHA-256 of the string below): replace with the real server key's pin.
PIN = hashlib.sha256(b"example server key - replace with the real SPKI SHA-256 pin").hexdigest()

TEST_KEYS = {
    "department-TEST-ONLY": b"plategate example department key - TEST ONLY - never deploy",
    "unit-TEST-ONLY": b"plategate example unit audit key - TEST ONLY - never deploy",
    "vendor-TEST-ONLY": b"plategate example vendor key (NOT trusted by units) - TEST ONLY",
}


def test_key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(TEST_KEYS[name]).digest())


def dest(did: str, agency: str, cls: str, jur: str, url: str, purposes: list[str], rule: dict,
         declaration: dict | None = None, pin: str | None = PIN) -> dict:
    out = {"id": did, "agency": agency, "class": cls, "jurisdiction": jur,
           "transport": {"broker_url": url, "topic": f"plategate/{did}/reads", "server_key_sha256": pin},
           "purposes": purposes, "rule": rule}
    if declaration is not None:
        out["declaration"] = declaration
    return out


def policy(agency: str, version: int, destinations: list[dict], prohibitions: dict, retention: dict,
           comment: str, declarations_required: dict | None = None) -> dict:
    doc = {"schema": "plategate.policy/1", "comment": comment, "agency": agency, "version": version,
           "issued_at": ISSUED, "not_before": ISSUED, "expires_at": EXPIRES,
           "destinations": destinations, "prohibitions": prohibitions, "retention": retention}
    if declarations_required is not None:
        doc["declarations_required"] = declarations_required
    return doc


def examples() -> dict[str, dict]:
    ct = policy(
        "Example Town (CT) Police Department", 1,
        [dest("own-records", "Example Town PD records system", "local_police", "US-CT",
              "mqtts://records.example-town-ct.gov:8883", LOCAL_PURPOSES,
              {"id": "own-all", "mode": "all", "fields": FIELDS_ALL, "plate_form": "clear"}),
         dest("ct-fusion-center", "Connecticut Intelligence Center (CTIC)", "state_fusion_center", "US-CT",
              "mqtts://ctic.example.ct.gov:8883", HIT_PURPOSES,
              {"id": "ctic-hits", "mode": "hotlist_hits", "fields": FIELDS_HIT, "plate_form": "clear",
               "location_precision_m": 100, "max_age_s": 3600})],
        {"classes": ["federal_immigration", "private"], "purposes": PROHIBITED_PURPOSES,
         "allowed_jurisdictions": ["US-CT"]},
        {"nonhit_max_age_minutes": 1440, "hit_max_age_days": 14},
        "Connecticut Trust Act style: own records get every read; the state fusion center gets hotlist "
        "hits only; nothing to federal immigration or private parties; nothing out of state.")
    ca = policy(
        "Example City (CA) Police Department", 1,
        [dest("own-records", "Example City PD records system", "local_police", "US-CA",
              "mqtts://records.example-city-ca.gov:8883", LOCAL_PURPOSES,
              {"id": "own-all", "mode": "all", "fields": FIELDS_ALL}),
         dest("county-sheriff", "Example County Sheriff", "local_police", "US-CA",
              "mqtts://alpr.example-county-sheriff.ca.gov:8883", HIT_PURPOSES + ["homicide_investigation"],
              {"id": "sheriff-hits", "mode": "hotlist_hits", "fields": FIELDS_HIT,
               "location_precision_m": 50, "max_age_s": 86400}),
         dest("chp", "California Highway Patrol", "state_police", "US-CA", "mqtts://alpr.chp.example.ca.gov:8883",
              ["stolen_vehicle", "amber_alert", "silver_alert"],
              {"id": "chp-hits", "mode": "hotlist_hits", "fields": ["plate", "timestamp", "camera_id", "location"],
               "location_precision_m": 100, "max_age_s": 3600})],
        {"classes": ["federal", "federal_immigration", "private", "other"], "purposes": PROHIBITED_PURPOSES,
         "allowed_jurisdictions": ["US-CA"]},
        {"nonhit_max_age_minutes": 1440, "hit_max_age_days": 60},
        "California SB 34 style (Civ. Code 1798.90.5): share ALPR information only with California public "
        "agencies; no federal, out-of-state or private recipients.")
    il = policy(
        "Example Village (IL) Police Department", 1,
        [dest("own-records", "Example Village PD records system", "local_police", "US-IL",
              "mqtts://records.example-village-il.gov:8883", LOCAL_PURPOSES,
              {"id": "own-all", "mode": "all", "fields": FIELDS_ALL}),
         dest("isp", "Illinois State Police", "state_police", "US-IL", "mqtts://alpr.isp.example.il.gov:8883",
              HIT_PURPOSES, {"id": "isp-hits", "mode": "hotlist_hits", "fields": FIELDS_HIT,
                             "location_precision_m": 100, "max_age_s": 3600}),
         dest("indiana-state-police", "Indiana State Police", "state_police", "US-IN",
              "mqtts://alpr.isp.example.in.gov:8883", ["stolen_vehicle", "amber_alert", "felony_warrant"],
              {"id": "in-isp-hits", "mode": "hotlist_hits", "fields": ["plate", "timestamp", "camera_id", "location"],
               "location_precision_m": 500, "max_age_s": 3600},
              declaration={"id": "IL-ALPR-DECL-2026-014", "expires_at": "2035-06-30T00:00:00Z"})],
        {"classes": ["federal_immigration", "private"],
         "purposes": ["immigration_enforcement", "reproductive_health_care", "first_amendment_activity"],
         "allowed_jurisdictions": []},
        {"nonhit_max_age_minutes": 1440, "hit_max_age_days": 30},
        "Illinois 2023 style (625 ILCS 5/2-130 as amended by HB 3326): out-of-state recipients only with a "
        "written declaration on file, and never for immigration enforcement or reproductive health care.",
        declarations_required={"outside_jurisdictions": ["US-IL"], "classes": []})
    strict = policy(
        "Example Town (NH) Police Department", 1,
        [dest("state-fusion-center", "State fusion center", "state_fusion_center", "US-NH",
              "mqtts://fusion.example.nh.gov:8883", ["stolen_vehicle", "amber_alert", "silver_alert", "missing_person"],
              {"id": "fusion-hits-hashed", "mode": "hotlist_hits",
               "fields": ["plate", "timestamp", "camera_id", "location"], "plate_form": "hmac_sha256",
               "location_precision_m": 1000, "max_age_s": 600})],
        {"classes": ["federal", "federal_immigration", "private", "other"], "purposes": PROHIBITED_PURPOSES,
         "allowed_jurisdictions": ["US-NH"]},
        {"nonhit_max_age_minutes": 3, "hit_max_age_days": 3},
        "Strict default: hotlist hits only, plate as a keyed hash, coarse location, non-hit reads deleted "
        "after 3 minutes (New Hampshire RSA 261:75-b).")
    demo = policy(
        "PlateGate demo department", 1,
        [dest("county-records", "County records system", "local_police", "US-CT", "mqtts://127.0.0.1:8883",
              LOCAL_PURPOSES, {"id": "county-all", "mode": "all", "fields": FIELDS_ALL, "plate_form": "clear"}),
         dest("ice-era", "ICE Enforcement and Removal Operations", "federal_immigration", "US-CT",
              "mqtts://127.0.0.1:8884", ["immigration_enforcement"],
              {"id": "ice-all", "mode": "all", "fields": FIELDS_ALL, "plate_form": "clear"})],
        {"classes": ["federal_immigration", "private"], "purposes": PROHIBITED_PURPOSES,
         "allowed_jurisdictions": ["US-CT"]},
        {"nonhit_max_age_minutes": 60, "hit_max_age_days": 7},
        "Demo only: county-records gets every read; ice-era is listed but its class is prohibited, so it gets "
        "nothing. Broker URLs and key pins are rewritten by the demo at run time (it starts one TLS broker per "
        "destination with a throw-away CA, and re-signs a copy with the test key).")
    return {"ct-trust-act": ct, "ca-sb34": ca, "il-2023": il, "strict-hits-only": strict, "demo": demo}


def demo_hotlist() -> dict:
    return {"schema": "plategate.hotlist/1", "list_id": "demo-stolen", "version": 1,
            "source": "PlateGate demo (not a real list)", "purpose": "stolen_vehicle",
            "issued_at": ISSUED, "max_staleness_hours": 87600,
            "comment": "Demo only: a 10-year staleness so the example does not rot; real lists use hours.",
            "plates": ["DEMO123", "ABC1234", "7XYZ123"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "firmware_config" / "policies",
                        help="output folder (default: firmware_config/policies)")
    args = parser.parse_args(argv)
    keys_dir = args.out / "test-keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    for name in TEST_KEYS:
        key = test_key(name)
        (keys_dir / f"{name}.key").write_bytes(private_pem(key))
        (keys_dir / f"{name}.key").chmod(0o600)
        (keys_dir / f"{name}.pub").write_bytes(public_pem(key.public_key()))
    department = test_key("department-TEST-ONLY")
    ids = {name: key_id(test_key(name).public_key()) for name in TEST_KEYS}
    for name, doc in examples().items():
        (args.out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.out / f"{name}.bundle").write_bytes(sign_bundle(doc, department))
    hot = demo_hotlist()
    (args.out / "demo-hotlist.json").write_text(json.dumps(hot, indent=2) + "\n")
    (args.out / "demo-hotlist.bundle").write_bytes(sign_hotlist(hot, department))
    print(json.dumps({"out": str(args.out), "key_ids": ids}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
