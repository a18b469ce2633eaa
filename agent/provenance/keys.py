"""Keys of read provenance: the unit's Ed25519 signing key and the department's X25519 sealing key.

Key ids are the project's one key-id function (`agent.policy.signing.key_id`: the first 16
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


def x25519_public_from_hex(text: str) -> X25519PublicKey:
    """The X25519 public key of a policy's `sealing.x25519_public_key` (64 hex digits)."""
    return X25519PublicKey.from_public_bytes(bytes.fromhex(text))


def write_x25519_keypair(prefix: Path, key: X25519PrivateKey, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write PREFIX.key (PEM, mode 0600, created exclusively) and PREFIX.pub (PEM)."""
    prefix = Path(prefix)
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(key_path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        os.fsync(fd)
    finally:
        os.close(fd)
    pub_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def load_unit_public_key(path: Path) -> Ed25519PublicKey:
    """A unit's Ed25519 public key from a PEM file (public, or private: its public half)."""
    from agent.policy.errors import PolicyError
    from agent.policy.signing import load_public_key
    try:
        return load_public_key(Path(path))
    except (OSError, PolicyError) as exc:
        raise KeyFileError(f"{path}: cannot load an Ed25519 public key ({exc})") from exc


__all__ = ["DEFAULT_UNIT_KEY_NAME", "KeyFileError", "key_id", "load_unit_key_or_create",
           "load_unit_public_key", "load_x25519_private", "raw_public", "write_x25519_keypair",
           "x25519_public_from_hex"]
