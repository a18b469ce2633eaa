"""The read message `plategate.read/2`: signed on the unit, optionally sealed, opened by receivers.

Pure functions over bytes and keys (no I/O, no clock), used by both ends so they cannot
disagree. Two forms, both described by `agent/schemas/read-message.json`:

Clear (a destination without a sealing key)::

    {"schema":"plategate.read/2","unit_id":U,"key_id":K,"read_id":R,"destination":D,
     "purpose":P,"policy_version":N,"read":{...allowed fields...},"signature":"<base64>"}

Sealed (the policy gives the destination an X25519 key): the clear message above, whole,
is the plaintext; what the broker sees is only the envelope::

    {"schema":"plategate.read/2","unit_id":U,"key_id":K,"read_id":R,"destination":D,
     "routing":{...routing metadata...},"seal_key_id":S,"sealed":"<base64 HPKE>"}

Signature: Ed25519 by the unit key over ``SIGN_CONTEXT`` + the canonical JSON (sorted keys,
no spaces, ASCII escapes) of ``{destination, policy_version, purpose, read, read_id,
unit_id}``: a read signed for one destination verifies for no other, and nothing of the
read can change. Signed first, then sealed.

Sealing: HPKE (RFC 9180, base mode, single shot) from `cryptography`, suite DHKEM(X25519,
HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305; the HPKE ``info`` is ``SEAL_CONTEXT`` + the
canonical JSON of the envelope without ``sealed``, so an envelope field changed in transit
(another read id, destination, routing value or key) makes the message undecryptable.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from agent.policy.signing import key_id as _key_id

READ_SCHEMA = "plategate.read/2"
LEGACY_SCHEMAS = frozenset({"plategate.read/1"})      # unsigned: always rejected
SIGN_CONTEXT = b"plategate.read/2 signature\n"
SEAL_CONTEXT = b"plategate.read/2 seal\n"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)

# Why a receiver refuses a message (the counters and samples use these names).
REJECT_REASONS = ("invalid", "unsigned", "bad_signature", "unknown_unit", "revoked",
                  "wrong_destination", "undecryptable", "not_sealed")

_quote = json.encoder.encode_basestring_ascii          # a JSON string, ASCII-escaped, in C
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no spaces, ASCII escapes: the form signatures and seals are computed over."""
    return _CANONICAL.encode(obj).encode("ascii")


# --- unit side ------------------------------------------------------------------------------

@dataclass(frozen=True)
class UnitSigner:
    """A unit's identity for its reads: its id and Ed25519 key (key id derived)."""

    unit_id: str
    key: Ed25519PrivateKey = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", _key_id(self.key.public_key()))


@dataclass(frozen=True)
class WireMessage:
    """What goes on the wire for one delivery, and whether it is the sealed form."""

    data: bytes
    sealed: bool


def signed_bytes(unit_id: str, destination: str, read_id: str, purpose: str,
                 policy_version: int, payload: bytes) -> bytes:
    """The bytes the unit signs; `payload` is the canonical JSON of the read's fields.

    Byte for byte ``SIGN_CONTEXT + canonical_json({...})`` (keys in sorted order), assembled
    directly because it runs for every message sent.
    """
    return b"".join((SIGN_CONTEXT, b'{"destination":', _quote(destination).encode(),
                     b',"policy_version":', str(int(policy_version)).encode(),
                     b',"purpose":', _quote(purpose).encode(), b',"read":', payload,
                     b',"read_id":', _quote(read_id).encode(),
                     b',"unit_id":', _quote(unit_id).encode(), b"}"))


def clear_message(signer: UnitSigner, destination: str, read_id: str, purpose: str,
                  policy_version: int, payload: bytes) -> bytes:
    """The signed clear form around the canonical `payload` bytes (spliced in verbatim)."""
    signature = signer.key.sign(signed_bytes(signer.unit_id, destination, read_id, purpose,
                                             policy_version, payload))
    head = (f'{{"schema":"{READ_SCHEMA}","unit_id":{_quote(signer.unit_id)},'
            f'"key_id":"{signer.key_id}","read_id":{_quote(read_id)},'
            f'"destination":{_quote(destination)},"purpose":{_quote(purpose)},'
            f'"policy_version":{int(policy_version)},"read":')
    return (head.encode() + payload + b',"signature":"'
            + base64.b64encode(signature) + b'"}')


def routing_values(payload: bytes, fields: frozenset[str]) -> dict:
    """The read fields named as routing metadata, as the payload carries them (absent: left out)."""
    if not fields:
        return {}
    read = json.loads(payload)
    return {name: read[name] for name in sorted(fields) if name in read}


def _envelope(unit_id: str, unit_key_id: str, destination: str, read_id: str, routing: dict,
              seal_key_id: str) -> dict:
    return {"schema": READ_SCHEMA, "unit_id": unit_id, "key_id": unit_key_id, "read_id": read_id,
            "destination": destination, "routing": routing, "seal_key_id": seal_key_id}


def seal_message(clear: bytes, *, unit_id: str, unit_key_id: str, destination: str,
                 read_id: str, routing: dict, recipient: X25519PublicKey) -> bytes:
    """The sealed form: `clear` encrypted to `recipient`, with the envelope bound as HPKE info."""
    envelope = _envelope(unit_id, unit_key_id, destination, read_id, routing, _key_id(recipient))
    sealed = SUITE.encrypt(clear, recipient, info=SEAL_CONTEXT + canonical_json(envelope))
    envelope["sealed"] = base64.b64encode(sealed).decode("ascii")
    return json.dumps(envelope, separators=(",", ":")).encode()


def wire_message(signer: UnitSigner, destination: str, read_id: str, purpose: str,
                 policy_version: int, payload: bytes, seal_to: bytes | None = None,
                 routing_fields: frozenset[str] = frozenset()) -> WireMessage:
    """Sign a delivery and, when `seal_to` (a raw X25519 public key) is given, seal it."""
    clear = clear_message(signer, destination, read_id, purpose, policy_version, payload)
    if seal_to is None:
        return WireMessage(clear, sealed=False)
    recipient = X25519PublicKey.from_public_bytes(seal_to)
    return WireMessage(seal_message(clear, unit_id=signer.unit_id, unit_key_id=signer.key_id,
                                    destination=destination, read_id=read_id,
                                    routing=routing_values(payload, routing_fields),
                                    recipient=recipient), sealed=True)


def is_sealed(data: bytes) -> bool:
    """Whether wire bytes are the sealed form (the envelope carries `sealed`, nothing in clear)."""
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and "sealed" in obj and "read" not in obj


# --- receiver side --------------------------------------------------------------------------

class Rejected(Exception):
    """A message a receiver must not store; `reason` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class UnitKey:
    """A registered unit key: reads signed by it verify unless it is revoked."""

    unit_id: str
    key_id: str
    public_key: Ed25519PublicKey = field(repr=False)
    revoked: bool = False


@dataclass(frozen=True)
class VerifiedRead:
    """A read that passed every check: which unit signed it, for whom, and its fields."""

    read_id: str
    destination: str
    unit_id: str
    key_id: str
    purpose: str
    policy_version: int
    read: dict
    sealed: bool


# validate(obj) -> None if `obj` is a valid read message, else why not (the JSON Schema).
Validator = Callable[[dict], str | None]


def _parse(data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected("invalid", f"{what} is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise Rejected("invalid", f"{what} is not a JSON object")
    return obj


def _unseal(obj: dict, seal_keys: Mapping[str, X25519PrivateKey]) -> bytes:
    private = seal_keys.get(obj["seal_key_id"])
    if private is None:
        raise Rejected("undecryptable", f"sealed to key {obj['seal_key_id']}, which this "
                                        f"receiver does not hold")
    envelope = {k: v for k, v in obj.items() if k != "sealed"}
    try:
        sealed = base64.b64decode(obj["sealed"], validate=True)
        return SUITE.decrypt(sealed, private, info=SEAL_CONTEXT + canonical_json(envelope))
    except (binascii.Error, ValueError, InvalidTag) as exc:
        raise Rejected("undecryptable", f"HPKE open failed ({type(exc).__name__})") from None


def open_message(data: bytes, *, destinations: frozenset[str],
                 unit_keys: Mapping[tuple[str, str], UnitKey],
                 seal_keys: Mapping[str, X25519PrivateKey], validate: Validator,
                 require_sealed: bool = False) -> VerifiedRead:
    """Check one message as a receiver must, in order; raise Rejected naming the first failure.

    1. JSON object, `plategate.read/2` with a signature or a seal (else ``unsigned``), valid
       against the schema (``invalid``);
    2. addressed to one of `destinations` (``wrong_destination``);
    3. sealed: opened with the key it names (``undecryptable``), and the inner clear message
       valid and agreeing with the envelope and its routing values (``invalid``); clear while
       `require_sealed` (``not_sealed``);
    4. signed by a registered (``unknown_unit``), unrevoked (``revoked``) key of that unit,
       and the signature verifies (``bad_signature``).
    """
    obj = _parse(data, "message")
    schema = obj.get("schema")
    if schema in LEGACY_SCHEMAS or (schema == READ_SCHEMA and "signature" not in obj
                                    and "sealed" not in obj):
        raise Rejected("unsigned", f"schema {schema!r} without a signature")
    problem = validate(obj)
    if problem is not None:
        raise Rejected("invalid", problem)
    if obj["destination"] not in destinations:
        raise Rejected("wrong_destination", f"addressed to {obj['destination']!r}, not to "
                                            f"{sorted(destinations)}")
    sealed = "sealed" in obj
    if sealed:
        inner = _parse(_unseal(obj, seal_keys), "sealed content")
        problem = validate(inner)
        if problem is not None or "sealed" in inner:
            raise Rejected("invalid", f"sealed content: {problem or 'sealed twice'}")
        for name in ("unit_id", "key_id", "read_id", "destination"):
            if inner[name] != obj[name]:
                raise Rejected("invalid", f"envelope {name} {obj[name]!r} differs from the sealed "
                                          f"read's {inner[name]!r}")
        for name, value in obj["routing"].items():
            if inner["read"].get(name) != value:
                raise Rejected("invalid", f"routing {name} differs from the sealed read's")
        obj = inner
    elif require_sealed:
        raise Rejected("not_sealed", "a clear read where this receiver accepts only sealed ones")
    unit = unit_keys.get((obj["unit_id"], obj["key_id"]))
    if unit is None:
        raise Rejected("unknown_unit", f"unit {obj['unit_id']!r} key {obj['key_id']} is not "
                                       f"registered")
    if unit.revoked:
        raise Rejected("revoked", f"unit {obj['unit_id']!r} key {obj['key_id']} is revoked")
    try:
        signature = base64.b64decode(obj["signature"], validate=True)
        unit.public_key.verify(signature, signed_bytes(
            obj["unit_id"], obj["destination"], obj["read_id"], obj["purpose"],
            obj["policy_version"], canonical_json(obj["read"])))
    except (binascii.Error, ValueError, InvalidSignature):
        raise Rejected("bad_signature", f"signature does not verify with unit {obj['unit_id']!r} "
                                        f"key {obj['key_id']}") from None
    return VerifiedRead(read_id=obj["read_id"], destination=obj["destination"],
                        unit_id=obj["unit_id"], key_id=obj["key_id"], purpose=obj["purpose"],
                        policy_version=obj["policy_version"], read=obj["read"], sealed=sealed)
