"""The unit's keys from its device config: trusted department keys and per-destination HMAC keys.

Loaded all or nothing, at start and again on every SIGHUP: a key file that is missing,
unreadable or wrong raises PolicyError("bad_key") naming the file, so a reload either
switches to the whole new set or keeps the whole running one. A PRIVATE key listed as
trusted is refused (see signing.load_public_key).

Audit records carry key ids only: the Ed25519 key id for trusted keys and, for an HMAC key,
the first 16 hex of SHA-256 over a fixed label and the key, so a rotation is visible in the
log without the key itself ever being written there.
"""
from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.policy.errors import PolicyError
from agent.policy.signing import load_trusted_keys

_HMAC_ID_LABEL = b"plategate.hmac-key-id/1\n"


def hmac_key_id(key: bytes) -> str:
    """A short public name for an HMAC key (never the key): for audit records and logs."""
    return hashlib.sha256(_HMAC_ID_LABEL + key).hexdigest()[:16]


def load_hmac_keys(path: Path | None) -> dict[str, bytes]:
    """destination id -> key from a TOML file of hex strings; {} when no file is configured."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyError("bad_key", f"{path}: cannot read the HMAC key file ({exc.strerror or exc})") from exc
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("bad_key", f"{path}: not a TOML file ({exc})") from exc
    keys: dict[str, bytes] = {}
    for dest_id, hex_key in table.items():
        try:
            key = bytes.fromhex(hex_key) if isinstance(hex_key, str) else b""
        except ValueError:
            key = b""
        if len(key) < 16:
            raise PolicyError("bad_key", f"{path}: key for destination {dest_id!r} is not a hex string of "
                                         f"at least 16 bytes")
        keys[dest_id] = key
    return keys


@dataclass(frozen=True)
class Keyring:
    """Every key the device config names, loaded and checked."""

    trusted: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    hmac: dict[str, bytes] = field(default_factory=dict, repr=False)

    def audit_fields(self) -> dict[str, object]:
        """Key ids only (for the `keys.loaded` audit record)."""
        return {"trusted": sorted(self.trusted),
                "hmac": {dest: hmac_key_id(key) for dest, key in sorted(self.hmac.items())}}


def load_keyring(trusted_keys: Iterable[Path], hmac_keys: Path | None) -> Keyring:
    """Load the trusted keys and HMAC keys a config names; PolicyError("bad_key") naming the
    first file that cannot be used."""
    return Keyring(trusted=load_trusted_keys(trusted_keys), hmac=load_hmac_keys(hmac_keys))
