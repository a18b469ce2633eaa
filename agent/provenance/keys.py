"""Keys of read provenance: the unit's Ed25519 signing key and the department's X25519 sealing key.

Both kinds are written with the project's `write_keypair` (PEM: PKCS#8 private, mode 0600;
SubjectPublicKeyInfo public). Key ids are the project's one key-id function (`agent.policy.signing.key_id`: the first 16
hex digits of SHA-256 over the 32 raw public-key bytes), for both kinds, so the id the
installer prints for a unit key is the id `plategate receive units add` expects, and the id
on a sealed envelope names the department key it was sealed to.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from agent.policy.signing import key_id, load_private_key, write_keypair

log = logging.getLogger(__name__)

# Where a unit keeps its own signing key when the config names none (`audit.unit_key`).
DEFAULT_UNIT_KEY_NAME = "unit.key"


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and why."""


def raw_public(public_key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_unit_key_or_create(path: Path) -> Ed25519PrivateKey:
    """The unit's signing key at `path`, created (mode 0600, with PREFIX.pub) if missing.

    The installer normally creates it; a unit started without one makes its own, like an SSH
    host key, and logs its key id so it can be registered with the department. Nothing it
    signs is trusted until the department registers that key id.
    """
    path = Path(path)
    if path.exists():
        return load_private_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    prefix = path.with_name(path.name[:-4] if path.name.endswith(".key") else path.name)
    key_path, _ = write_keypair(prefix, key)
    if key_path != path:                       # a name without .key: keep the name asked for
        os.replace(key_path, path)
    log.warning("unit signing key created path=%s key_id=%s: register this key id with each "
                "department (plategate receive units add)", path, key_id(key.public_key()))
    return key


def load_x25519_private(path: Path) -> X25519PrivateKey:
    """A department's X25519 private key (PEM, PKCS#8) from `path`."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: cannot load an X25519 private key ({exc})") from exc
    if not isinstance(key, X25519PrivateKey):
        raise KeyFileError(f"{path}: not an X25519 private key")
    return key


def load_unit_public_key(path: Path) -> Ed25519PublicKey:
    """A unit's Ed25519 public key from a PEM file (public, or private: its public half)."""
    from agent.policy.errors import PolicyError
    from agent.policy.signing import load_public_key
    try:
        return load_public_key(Path(path))
    except (OSError, PolicyError) as exc:
        raise KeyFileError(f"{path}: cannot load an Ed25519 public key ({exc})") from exc


__all__ = ["DEFAULT_UNIT_KEY_NAME", "KeyFileError", "key_id", "load_unit_key_or_create",
           "load_unit_public_key", "load_x25519_private", "raw_public", "write_keypair"]
