"""Signed policy bundles: sign on the department's machine, verify and load on the unit.

``load_bundle`` is the only way a policy gets onto a unit. It checks, in this order, and
refuses with a PolicyError naming the first failure:

1. the envelope parses and is byte-for-byte canonical   -> ``invalid_json`` / ``bad_format``
2. it is a policy bundle                                  -> ``wrong_kind``
3. the signer is a trusted department key                 -> ``unknown_signer``
4. the Ed25519 signature verifies                         -> ``bad_signature``
5. the signed payload is JSON matching the policy schema  -> ``invalid_json`` / ``schema``
6. version > active_version (no rollback, no replay)      -> ``rollback``
7. not expired, and not_before has passed                 -> ``expired`` / ``not_yet_valid``
8. no plain mqtt:// destination, unless the unit opted in -> ``insecure_transport``
   (the schema already refuses plain MQTT to anything but a loopback address and mqtts://
   without a server key pin; this step is the device's own opt-in for loopback)

A bundle whose not_before is still in the future is refused, not held: the unit keeps its
current policy and the department re-sends (or issues with not_before <= now). This keeps
the unit free of pending state that could activate unseen.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.policy.errors import PolicyError
from agent.policy.model import Policy
from agent.policy.schema import format_time, policy_from_dict
from agent.policy.signing import canonical_json, open_envelope, peek_payload, seal

__all__ = ["PolicyError", "sign_bundle", "load_bundle", "parse_policy_json", "policy_digest", "rollback_floor"]


def sign_bundle(policy_json: dict, private_key: Ed25519PrivateKey, key_id: str | None = None,
                *, validate: bool = True) -> bytes:
    """Sign a policy document; returns the bundle file bytes.

    The document is validated first (a department should never be able to sign a policy its
    own units would refuse); ``validate=False`` exists for tests that need a signed bad policy.
    """
    payload = canonical_json(policy_json)
    if validate:
        policy_from_dict(policy_json, signer_key_id="", digest="")
    return seal("policy", payload, private_key, key_id)


def policy_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _decode_payload(payload: bytes) -> object:
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError("invalid_json", f"policy payload is not valid JSON ({exc})") from exc


def rollback_floor(*known_versions: int, reoffer_of_persisted: bool) -> int | None:
    """The version an offered bundle must exceed (None: any), for policies and hotlists alike.

    `known_versions` are the active one and the persisted high-water marks. The persisted
    bundle offered again before it was loaded (from the config at boot) may keep its own
    version; anything older is a rollback.
    """
    floor = max(known_versions, default=0) - (1 if reoffer_of_persisted else 0)
    return floor if floor > 0 else None


def check_times(policy: Policy, now: float) -> None:
    if now >= policy.expires_at:
        raise PolicyError("expired", f"policy version {policy.version} expired at {format_time(policy.expires_at)}")
    if now < policy.not_before:
        raise PolicyError("not_yet_valid",
                          f"policy version {policy.version} is not valid before {format_time(policy.not_before)}")


def check_plaintext(policy: Policy, allow_plaintext_loopback: bool) -> None:
    """Refuse a policy with a plain mqtt:// destination unless the device config allows it."""
    if allow_plaintext_loopback:
        return
    for i, dest in enumerate(policy.destinations):
        url = dest.transport.broker_url
        if not url.startswith("mqtts://"):
            raise PolicyError("insecure_transport",
                              f"destinations[{i}].transport: {url} is plain MQTT (no TLS, no server "
                              f"identity); this unit refuses it. Use mqtts:// with server_key_sha256, "
                              f"or, for a test or demo broker on this machine only, set "
                              f"[delivery] allow_plaintext_loopback = true in the device config")


def load_bundle(data: bytes, trusted_keys: Mapping[str, Ed25519PublicKey], now: float,
                active_version: int | None, *, allow_plaintext_loopback: bool = False) -> Policy:
    """Verify a signed bundle and return its Policy, or raise PolicyError(reason)."""
    opened = open_envelope(data, "policy", trusted_keys)
    doc = _decode_payload(opened.payload)
    policy = policy_from_dict(doc, signer_key_id=opened.key_id, digest=opened.digest)
    if active_version is not None and policy.version <= active_version:
        raise PolicyError("rollback", f"policy version {policy.version} is not newer than version "
                                      f"{active_version} already installed")
    check_times(policy, now)
    check_plaintext(policy, allow_plaintext_loopback)
    return policy


def parse_policy_json(data: bytes, *, signer_key_id: str = "unsigned") -> Policy:
    """Parse a policy from plain JSON or from a bundle WITHOUT checking any signature.

    For `plategate policy check/explain` on a department workstation; never used on the
    unit's install path.
    """
    stripped = data.lstrip()
    if stripped.startswith(b"{") and b'"format":"plategate.bundle/1"' in stripped[:200]:
        data = peek_payload(data)
    doc = _decode_payload(data)
    return policy_from_dict(doc, signer_key_id=signer_key_id, digest=policy_digest(canonical_json(doc)))
