"""Parse a policy's JSON into the model dataclasses, refusing anything unexpected.

Hand-written rather than jsonschema so the unit needs no extra runtime dependency and so
every message reads like ``destinations[2].class: 'feds' is not one of [...] (did you mean
'federal'?)``. All problems are collected and reported together; the first one leads.
Unknown keys are refused (a field this code does not understand might be meant to
restrict sharing, so ignoring it would fail open).
"""
from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from agent.keypaths import did_you_mean, join
from agent.policy.errors import PolicyError
from agent.policy.model import (
    DESTINATION_CLASSES, FIELDS, PLATE_FORMS, PURPOSES, ROUTING_FIELDS, RULE_MODES, AllowRule,
    Declaration, Destination, Policy, Prohibitions, Retention, Sealing, Transport,
)
from agent.policy.topics import validate_topic

POLICY_SCHEMA = "plategate.policy/1"
ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
JURISDICTION_RE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
BROKER_RE = re.compile(r"^mqtts?://[^/\s:]+(:[0-9]{1,5})?/?$")

_MISSING = object()


class Errors:
    """Collects 'path: message' strings while a document is walked."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def has(self, *paths: str) -> bool:
        """Whether a problem was already reported at one of `paths` (to avoid a second one)."""
        return any(item.startswith(f"{p}:") for p in paths for item in self.items)

    def raise_if_any(self, what: str) -> None:
        if self.items:
            err = PolicyError("schema", f"{what}: " + "; ".join(self.items))
            err.errors = list(self.items)  # type: ignore[attr-defined]
            raise err


def check_object(value: Any, path: str, required: set[str], optional: set[str], errs: Errors) -> dict | None:
    if not isinstance(value, dict):
        errs.add(path, f"expected an object, got {type(value).__name__}")
        return None
    for key in value:
        if key not in required and key not in optional:
            errs.add(join(path, key), "unknown field" + did_you_mean(key, required | optional))
    for key in sorted(required - set(value)):
        errs.add(join(path, key), "required field is missing")
    return value


def get_str(obj: dict, key: str, path: str, errs: Errors, *, pattern: re.Pattern | None = None,
            optional: bool = False, nullable: bool = False, max_len: int = 256) -> str | None:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        return None  # reported by check_object when required
    if value is None and nullable:
        return None
    p = join(path, key)
    if not isinstance(value, str):
        errs.add(p, f"expected a string, got {_type(value)}")
        return None
    if not value or len(value) > max_len:
        errs.add(p, f"must be 1..{max_len} characters")
        return None
    if pattern is not None and not pattern.match(value):
        errs.add(p, f"{value!r} does not match {pattern.pattern}")
        return None
    return value


def get_enum(obj: dict, key: str, path: str, choices: frozenset[str], errs: Errors) -> str | None:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        return None
    p = join(path, key)
    if not isinstance(value, str):
        errs.add(p, f"expected a string, got {_type(value)}")
        return None
    if value not in choices:
        errs.add(p, f"{value!r} is not one of {sorted(choices)}" + did_you_mean(value, choices))
        return None
    return value


def get_enum_set(obj: dict, key: str, path: str, choices: frozenset[str], errs: Errors,
                 *, min_items: int = 0, item_check: Callable[[str], bool] | None = None,
                 item_desc: str = "") -> frozenset[str] | None:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        return frozenset() if min_items == 0 else None
    p = join(path, key)
    if not isinstance(value, list):
        errs.add(p, f"expected a list, got {_type(value)}")
        return None
    out: set[str] = set()
    ok = True
    for i, item in enumerate(value):
        ip = join(p, i)
        if not isinstance(item, str):
            errs.add(ip, f"expected a string, got {_type(item)}")
            ok = False
        elif item_check is not None:
            if not item_check(item):
                errs.add(ip, f"{item!r} is not {item_desc}")
                ok = False
        elif item not in choices:
            errs.add(ip, f"{item!r} is not one of {sorted(choices)}" + did_you_mean(item, choices))
            ok = False
        if isinstance(item, str):
            if item in out:
                errs.add(ip, f"{item!r} is listed twice")
                ok = False
            out.add(item)
    if ok and len(out) < min_items:
        errs.add(p, f"needs at least {min_items} item(s)")
        ok = False
    return frozenset(out) if ok else None


def get_number(obj: dict, key: str, path: str, errs: Errors, *, minimum: float | None = None,
               exclusive_min: bool = False, nullable: bool = False, integer: bool = False) -> float | None:
    value = obj.get(key, _MISSING)
    if value is _MISSING or (value is None and nullable):
        return None
    p = join(path, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        errs.add(p, f"expected {'an integer' if integer else 'a number'}, got {_type(value)}")
        return None
    if not math.isfinite(value):
        errs.add(p, "must be finite")
        return None
    if minimum is not None and (value <= minimum if exclusive_min else value < minimum):
        errs.add(p, f"must be {'>' if exclusive_min else '>='} {minimum}, got {value}")
        return None
    return value


def parse_time(value: Any, path: str, errs: Errors) -> float | None:
    """ISO 8601 with an explicit zone (e.g. 2036-01-01T00:00:00Z) -> unix seconds."""
    if not isinstance(value, str):
        errs.add(path, f"expected an ISO 8601 time string, got {_type(value)}")
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        errs.add(path, f"{value!r} is not an ISO 8601 time")
        return None
    if parsed.tzinfo is None:
        errs.add(path, f"{value!r} has no time zone (add Z for UTC)")
        return None
    return parsed.timestamp()


def get_time(obj: dict, key: str, path: str, errs: Errors) -> float | None:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        return None
    return parse_time(value, join(path, key), errs)


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "object"}.get(type(value), type(value).__name__)


def _jurisdiction_ok(item: str) -> bool:
    return bool(JURISDICTION_RE.match(item))


# --- policy -------------------------------------------------------------------------------

def is_loopback_host(host: str | None) -> bool:
    """True only for a loopback IP literal (127.0.0.0/8): never a name, which DNS or
    /etc/hosts could point elsewhere."""
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def broker_host(url: str) -> tuple[str, str]:
    """(scheme, host) of a broker URL already matched by BROKER_RE."""
    scheme, rest = url.split("://", 1)
    return scheme, rest.rstrip("/").split(":", 1)[0]


def transport_identity_problem(url: str, pin: str | None, ca: str | None) -> str | None:
    """Why a transport does not prove its broker's identity (DESIGN invariant 5), or None.

    mqtts:// needs the SPKI SHA-256 pin of the broker's key (a CA alone trusts every server
    that CA ever certified). Plain mqtt:// is only allowed to a loopback address, with no pin
    or CA (they would be meaningless without TLS); the unit still refuses it unless its
    device config opts in (``[delivery] allow_plaintext_loopback``).
    """
    scheme, host = broker_host(url)
    if scheme == "mqtts":
        if pin is None:
            return (f"{url} has no server identity: server_key_sha256 (the SHA-256 of the broker's "
                    f"SubjectPublicKeyInfo) is required" + (" besides ca_pem" if ca else ""))
        return None
    if not is_loopback_host(host):
        return (f"{url} is plain MQTT to {host}: reads would travel in clear text to a broker whose "
                f"identity nobody checks; use mqtts:// with server_key_sha256 (plain mqtt:// is "
                f"allowed only to a 127.x.x.x broker, on a unit that sets "
                f"[delivery] allow_plaintext_loopback = true)")
    if pin is not None or ca is not None:
        return f"{url} is plain MQTT: server_key_sha256 and ca_pem need mqtts://"
    return None


def _transport(value: Any, path: str, errs: Errors, dest_id: str | None = None) -> Transport | None:
    obj = check_object(value, path, {"broker_url", "topic"}, {"server_key_sha256", "ca_pem"}, errs)
    if obj is None:
        return None
    url = get_str(obj, "broker_url", path, errs, pattern=BROKER_RE)
    topic = get_str(obj, "topic", path, errs)
    if topic is not None:
        # The delivery stage's own rule (agent/policy/topics.py), so a topic it would refuse
        # is refused here, at install, instead of leaving the destination silently unserved.
        try:
            validate_topic(topic)
        except ValueError as exc:
            errs.add(join(path, "topic"), f"destination {dest_id or '?'!r}: {exc}")
            topic = None
    pin = get_str(obj, "server_key_sha256", path, errs, pattern=HEX64_RE, nullable=True)
    ca = get_str(obj, "ca_pem", path, errs, nullable=True, max_len=65536)
    if ca is not None and "-----BEGIN CERTIFICATE-----" not in ca:
        errs.add(join(path, "ca_pem"), "is not a PEM certificate")
    if url is not None and not errs.has(join(path, "server_key_sha256"), join(path, "ca_pem")):
        problem = transport_identity_problem(url, pin, ca)
        if problem is not None:
            errs.add(path, problem)
            return None
    if url is None or topic is None:
        return None
    return Transport(broker_url=url, topic=topic, server_key_sha256=pin, ca_pem=ca)


def _rule(value: Any, path: str, errs: Errors) -> AllowRule | None:
    obj = check_object(value, path, {"id", "mode", "fields"},
                       {"plate_form", "location_precision_m", "max_age_s"}, errs)
    if obj is None:
        return None
    rid = get_str(obj, "id", path, errs, pattern=ID_RE)
    mode = get_enum(obj, "mode", path, RULE_MODES, errs)
    fields = get_enum_set(obj, "fields", path, FIELDS, errs)
    plate_form = get_enum(obj, "plate_form", path, PLATE_FORMS, errs) if "plate_form" in obj else "clear"
    precision = get_number(obj, "location_precision_m", path, errs, minimum=0)
    max_age = get_number(obj, "max_age_s", path, errs, minimum=0, exclusive_min=True, nullable=True)
    if None in (rid, mode, fields, plate_form):
        return None
    return AllowRule(id=rid, mode=mode, fields=fields, plate_form=plate_form,
                     location_precision_m=float(precision or 0.0),
                     max_age_s=None if max_age is None else float(max_age))


def _declaration(value: Any, path: str, errs: Errors) -> Declaration | None:
    obj = check_object(value, path, {"id", "expires_at"}, set(), errs)
    if obj is None:
        return None
    did = get_str(obj, "id", path, errs)
    exp = get_time(obj, "expires_at", path, errs)
    if did is None or exp is None:
        return None
    return Declaration(id=did, expires_at=exp)


def _sealing(value: Any, path: str, errs: Errors, rule: AllowRule | None) -> Sealing | None:
    """A destination's `sealing` object: its X25519 key (64 hex) and the routing metadata."""
    obj = check_object(value, path, {"x25519_public_key"}, {"routing_metadata"}, errs)
    if obj is None:
        return None
    key_hex = get_str(obj, "x25519_public_key", path, errs, pattern=HEX64_RE)
    routing = get_enum_set(obj, "routing_metadata", path, ROUTING_FIELDS, errs)
    if routing is not None and rule is not None and not routing <= rule.fields:
        errs.add(join(path, "routing_metadata"),
                 f"{sorted(routing - rule.fields)} not among the rule's fields (a field the "
                 f"destination may not receive cannot be shown on its envelope)")
        return None
    if key_hex is None or routing is None:
        return None
    return Sealing(public_key=bytes.fromhex(key_hex), routing_metadata=routing)


def _destination(value: Any, path: str, errs: Errors) -> Destination | None:
    obj = check_object(value, path, {"id", "agency", "class", "jurisdiction", "transport", "purposes", "rule"},
                       {"declaration", "sealing"}, errs)
    if obj is None:
        return None
    did = get_str(obj, "id", path, errs, pattern=ID_RE)
    agency = get_str(obj, "agency", path, errs)
    cls = get_enum(obj, "class", path, DESTINATION_CLASSES, errs)
    jur = get_str(obj, "jurisdiction", path, errs, pattern=JURISDICTION_RE)
    transport = (_transport(obj["transport"], join(path, "transport"), errs, did)
                 if "transport" in obj else None)
    purposes = get_enum_set(obj, "purposes", path, PURPOSES, errs, min_items=1)
    declaration = None
    if obj.get("declaration") is not None:
        declaration = _declaration(obj["declaration"], join(path, "declaration"), errs)
        if declaration is None:
            return None
    rule = _rule(obj["rule"], join(path, "rule"), errs) if "rule" in obj else None
    sealing = None
    if obj.get("sealing") is not None:
        sealing = _sealing(obj["sealing"], join(path, "sealing"), errs, rule)
        if sealing is None:
            return None
    if None in (did, agency, cls, jur, transport, purposes, rule):
        return None
    return Destination(id=did, agency=agency, dest_class=cls, jurisdiction=jur, transport=transport,
                       purposes=purposes, declaration=declaration, rule=rule, sealing=sealing)


def policy_from_dict(doc: Any, *, signer_key_id: str, digest: str) -> Policy:
    """Build a Policy from its parsed JSON; raises PolicyError("schema") listing every problem."""
    errs = Errors()
    top_required = {"schema", "agency", "version", "issued_at", "not_before", "expires_at",
                    "destinations", "prohibitions", "retention"}
    obj = check_object(doc, "", top_required, {"declarations_required", "comment", "require_sealed"},
                       errs)
    if obj is None:
        errs.raise_if_any("policy")
    if "schema" in obj and obj["schema"] != POLICY_SCHEMA:
        errs.add("schema", f"{obj['schema']!r} is not {POLICY_SCHEMA!r}")
    if "comment" in obj and not isinstance(obj["comment"], str):
        errs.add("comment", f"expected a string, got {_type(obj['comment'])}")
    agency = get_str(obj, "agency", "", errs)
    version = get_number(obj, "version", "", errs, minimum=1, integer=True)
    issued = get_time(obj, "issued_at", "", errs)
    not_before = get_time(obj, "not_before", "", errs)
    expires = get_time(obj, "expires_at", "", errs)
    if not_before is not None and expires is not None and not_before >= expires:
        errs.add("not_before", "must be before expires_at")
    if issued is not None and expires is not None and issued >= expires:
        errs.add("issued_at", "must be before expires_at")

    require_sealed = obj.get("require_sealed", False)
    if not isinstance(require_sealed, bool):
        errs.add("require_sealed", f"expected true or false, got {_type(require_sealed)}")
        require_sealed = True           # fail closed while reporting the error
    destinations: list[Destination] = []
    raw = obj.get("destinations", [])
    if not isinstance(raw, list):
        errs.add("destinations", f"expected a list, got {_type(raw)}")
        raw = []
    seen_ids: dict[str, int] = {}
    seen_rules: dict[str, int] = {}
    for i, item in enumerate(raw):
        dest = _destination(item, join("destinations", i), errs)
        if dest is None:
            continue
        if dest.id in seen_ids:
            errs.add(join(join("destinations", i), "id"), f"{dest.id!r} repeats destinations[{seen_ids[dest.id]}]")
        if dest.rule.id in seen_rules:
            errs.add(join(join(join("destinations", i), "rule"), "id"),
                     f"{dest.rule.id!r} repeats the rule of destinations[{seen_rules[dest.rule.id]}]")
        if require_sealed and dest.sealing is None:
            errs.add(join(join("destinations", i), "sealing"),
                     f"destination {dest.id!r} has no sealing key, but the policy requires every "
                     f"destination to be sealed (require_sealed)")
        seen_ids.setdefault(dest.id, i)
        seen_rules.setdefault(dest.rule.id, i)
        destinations.append(dest)

    prohibitions = None
    pobj = check_object(obj["prohibitions"], "prohibitions", set(),
                        {"classes", "purposes", "allowed_jurisdictions"}, errs) if "prohibitions" in obj else None
    dobj: dict = {}
    if "declarations_required" in obj:
        dobj = check_object(obj["declarations_required"], "declarations_required", set(),
                            {"outside_jurisdictions", "classes"}, errs) or {}
    if pobj is not None:
        classes = get_enum_set(pobj, "classes", "prohibitions", DESTINATION_CLASSES, errs)
        purposes = get_enum_set(pobj, "purposes", "prohibitions", PURPOSES, errs)
        jurs = get_enum_set(pobj, "allowed_jurisdictions", "prohibitions", frozenset(), errs,
                            item_check=_jurisdiction_ok, item_desc="an ISO 3166-2 code like 'US-CT'")
        req_out = get_enum_set(dobj, "outside_jurisdictions", "declarations_required", frozenset(), errs,
                               item_check=_jurisdiction_ok, item_desc="an ISO 3166-2 code like 'US-IL'")
        req_cls = get_enum_set(dobj, "classes", "declarations_required", DESTINATION_CLASSES, errs)
        if None not in (classes, purposes, jurs, req_out, req_cls):
            prohibitions = Prohibitions(classes=classes, purposes=purposes, allowed_jurisdictions=jurs,
                                        declaration_required_outside=req_out,
                                        declaration_required_classes=req_cls)

    retention = None
    robj = check_object(obj["retention"], "retention", {"nonhit_max_age_minutes", "hit_max_age_days"},
                        set(), errs) if "retention" in obj else None
    if robj is not None:
        nonhit = get_number(robj, "nonhit_max_age_minutes", "retention", errs, minimum=0, exclusive_min=True)
        hit = get_number(robj, "hit_max_age_days", "retention", errs, minimum=0, exclusive_min=True)
        if nonhit is not None and hit is not None:
            retention = Retention(nonhit_max_age_s=float(nonhit) * 60.0, hit_max_age_s=float(hit) * 86400.0)

    errs.raise_if_any("policy")
    return Policy(agency=agency, version=int(version), issued_at=issued, not_before=not_before,
                  expires_at=expires, signer_key_id=signer_key_id, digest=digest,
                  destinations=tuple(destinations), prohibitions=prohibitions, retention=retention,
                  require_sealed=require_sealed)


def policy_to_dict(policy: Policy) -> dict:
    """The JSON document for a Policy (inverse of policy_from_dict, minus signer and digest).

    For tools that edit a policy programmatically (e.g. the demo rewriting broker URLs) and
    for round-trip tests of the parser.
    """
    proh = policy.prohibitions
    doc: dict = {
        "schema": POLICY_SCHEMA, "agency": policy.agency, "version": policy.version,
        "issued_at": format_time(policy.issued_at), "not_before": format_time(policy.not_before),
        "expires_at": format_time(policy.expires_at),
        "destinations": [_destination_to_dict(d) for d in policy.destinations],
        "prohibitions": {"classes": sorted(proh.classes), "purposes": sorted(proh.purposes),
                         "allowed_jurisdictions": sorted(proh.allowed_jurisdictions)},
        "retention": {"nonhit_max_age_minutes": policy.retention.nonhit_max_age_s / 60.0,
                      "hit_max_age_days": policy.retention.hit_max_age_s / 86400.0},
    }
    if policy.require_sealed:
        doc["require_sealed"] = True
    if proh.declaration_required_outside or proh.declaration_required_classes:
        doc["declarations_required"] = {"outside_jurisdictions": sorted(proh.declaration_required_outside),
                                        "classes": sorted(proh.declaration_required_classes)}
    return doc


def _destination_to_dict(dest: Destination) -> dict:
    rule = dest.rule
    out = {
        "id": dest.id, "agency": dest.agency, "class": dest.dest_class, "jurisdiction": dest.jurisdiction,
        "transport": {"broker_url": dest.transport.broker_url, "topic": dest.transport.topic,
                      "server_key_sha256": dest.transport.server_key_sha256, "ca_pem": dest.transport.ca_pem},
        "purposes": sorted(dest.purposes),
        "rule": {"id": rule.id, "mode": rule.mode, "fields": sorted(rule.fields), "plate_form": rule.plate_form,
                 "location_precision_m": rule.location_precision_m, "max_age_s": rule.max_age_s},
    }
    if dest.declaration is not None:
        out["declaration"] = {"id": dest.declaration.id, "expires_at": format_time(dest.declaration.expires_at)}
    if dest.sealing is not None:
        out["sealing"] = {"x25519_public_key": dest.sealing.public_key.hex(),
                          "routing_metadata": sorted(dest.sealing.routing_metadata)}
    return out
