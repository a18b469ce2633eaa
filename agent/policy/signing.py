"""Ed25519 keys and the signed envelope shared by policy and hotlist bundles.

A bundle file is one line of canonical JSON (sorted keys, no spaces, ASCII) plus a newline::

    {"format":"plategate.bundle/1","key_id":"…","kind":"policy","payload":"<base64>",
     "signature":"<base64>"}

The signature covers ``plategate.bundle/1\\n<kind>\\n<key_id>\\n<payload bytes>`` so a hotlist
signature can never be replayed as a policy and vice versa. The file must be byte-for-byte
the canonical encoding of what it parses to: this is what makes *every* single-byte change
detectable (a change in base64 padding bits or JSON whitespace would otherwise decode to the
same content and pass).

Key id: the first 16 hex digits of SHA-256 over the 32 raw public-key bytes. Keys are stored
as PEM (PKCS#8 private, SubjectPublicKeyInfo public).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.policy.errors import PolicyError

FORMAT = "plategate.bundle/1"
KINDS = frozenset({"policy", "hotlist"})
_ENVELOPE_KEYS = frozenset({"format", "key_id", "kind", "payload", "signature"})


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PolicyError("bad_key", f"{path}: cannot load an Ed25519 private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise PolicyError("bad_key", f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file; PolicyError("bad_key") naming the file otherwise.

    A PRIVATE key is refused, not reduced to its public half: a unit (or a verifying
    workstation) that holds a department's signing key can sign policies itself, so the file
    must not be there at all.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError("bad_key", f"{path}: cannot read the key file ({exc.strerror or exc})") from exc
    if b"PRIVATE KEY-----" in data:
        raise PolicyError("bad_key", f"{path}: is a PRIVATE key; a unit must hold only the public key "
                                     f"(the .pub file written by `plategate keygen`)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise PolicyError("bad_key", f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise PolicyError("bad_key", f"{path}: not an Ed25519 public key")
    return key


def load_trusted_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Map key id -> public key for each PEM file (the unit's trusted department keys).

    All or nothing: the first file that is missing, unreadable, not an Ed25519 public key or
    a private key raises PolicyError("bad_key") naming it, so a caller never runs with part
    of the set it was given.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        pub = load_public_key(Path(path))
        keys[key_id(pub)] = pub
    return keys


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def write_keypair(prefix: Path, key: Ed25519PrivateKey, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write PREFIX.key (mode 0600, created exclusively) and PREFIX.pub."""
    prefix = Path(prefix)
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(key_path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, private_pem(key))
        os.fsync(fd)
    finally:
        os.close(fd)
    pub_path.write_bytes(public_pem(key.public_key()))
    return key_path, pub_path


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _signed_message(kind: str, kid: str, payload: bytes) -> bytes:
    return b"%s\n%s\n%s\n" % (FORMAT.encode(), kind.encode(), kid.encode()) + payload


def seal(kind: str, payload: bytes, private_key: Ed25519PrivateKey, kid: str | None = None) -> bytes:
    """Sign ``payload`` as a bundle of ``kind``; returns the canonical bundle file bytes."""
    if kind not in KINDS:
        raise PolicyError("wrong_kind", f"kind {kind!r} is not one of {sorted(KINDS)}")
    actual = key_id(private_key.public_key())
    if kid is not None and kid != actual:
        raise PolicyError("bad_key", f"key id {kid!r} does not match the private key ({actual})")
    signature = private_key.sign(_signed_message(kind, actual, payload))
    envelope = {
        "format": FORMAT, "key_id": actual, "kind": kind,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return canonical_json(envelope) + b"\n"


@dataclass(frozen=True)
class Opened:
    """A verified bundle: the signer's key id, the payload bytes and their SHA-256."""

    kind: str
    key_id: str
    payload: bytes
    digest: str


def open_envelope(data: bytes, kind: str, trusted_keys: Mapping[str, Ed25519PublicKey]) -> Opened:
    """Check format, signer and signature; return the payload. Raises PolicyError."""
    if not isinstance(data, (bytes, bytearray)):
        raise PolicyError("bad_format", "bundle must be bytes")
    data = bytes(data)
    try:
        envelope = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError("invalid_json", f"bundle is not valid JSON ({exc})") from exc
    if not isinstance(envelope, dict):
        raise PolicyError("bad_format", "bundle must be a JSON object")
    keys = set(envelope)
    if keys != _ENVELOPE_KEYS:
        extra, missing = sorted(keys - _ENVELOPE_KEYS), sorted(_ENVELOPE_KEYS - keys)
        raise PolicyError("bad_format", f"bundle envelope keys wrong (unknown: {extra}, missing: {missing})")
    if not all(isinstance(envelope[k], str) for k in _ENVELOPE_KEYS):
        raise PolicyError("bad_format", "bundle envelope values must all be strings")
    if envelope["format"] != FORMAT:
        raise PolicyError("bad_format", f"format {envelope['format']!r} is not {FORMAT!r}")
    if canonical_json(envelope) + b"\n" != data:
        raise PolicyError("bad_format", "bundle is not in canonical form (altered after signing?)")
    if envelope["kind"] != kind:
        raise PolicyError("wrong_kind", f"bundle kind is {envelope['kind']!r}, expected {kind!r}")
    kid = envelope["key_id"]
    public_key = trusted_keys.get(kid)
    if public_key is None:
        raise PolicyError("unknown_signer", f"key id {kid!r} is not a trusted department key")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PolicyError("bad_format", f"payload or signature is not base64 ({exc})") from exc
    try:
        public_key.verify(signature, _signed_message(kind, kid, payload))
    except InvalidSignature as exc:
        raise PolicyError("bad_signature", f"signature does not verify with key {kid}") from exc
    return Opened(kind=kind, key_id=kid, payload=payload, digest=hashlib.sha256(payload).hexdigest())


def peek_payload(data: bytes) -> bytes:
    """The payload of a bundle WITHOUT verifying it (for `policy check` on untrusted input)."""
    try:
        envelope = json.loads(bytes(data).decode("utf-8"))
        return base64.b64decode(envelope["payload"], validate=True)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, binascii.Error) as exc:
        raise PolicyError("bad_format", f"not a bundle ({exc})") from exc
