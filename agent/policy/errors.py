"""The one error type for a refused policy, hotlist or projection.

Every refusal carries a short machine reason (``rule_id``-like, e.g. ``bad_signature``,
``rollback``, ``schema``) so callers can audit it and tests can assert on it, plus a
human message that names what was wrong and where (for schema problems, the JSON path).
"""
from __future__ import annotations

# The reasons a bundle can be refused; the audit log and docs/policy.md use these codes.
REASONS = frozenset({
    "invalid_json", "bad_format", "wrong_kind", "unknown_signer", "bad_signature",
    "schema", "rollback", "expired", "not_yet_valid", "denied", "no_hmac_key",
    "bad_key", "io", "insecure_transport",
})


class PolicyError(ValueError):
    """A policy, hotlist or payload was refused; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
