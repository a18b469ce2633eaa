"""How long a read may stay on the unit: the policy's retention, or a strict fallback.

Pure helpers for the stages that store reads (outbox, any image cache): they delete what
``is_expired`` says, and audit the deletion as ``retention.deleted``. Without a valid policy
the unit shares nothing but must still delete, so a strict fallback applies (device config
``policy.fallback_nonhit_minutes`` / ``policy.fallback_hit_days``).
"""
from __future__ import annotations

from agent.policy.model import Policy, Retention
from agent.reads import ReadEvent

# New Hampshire's 3 minutes for non-hits; hits kept 3 days so an operator can act on an alert.
FALLBACK_RETENTION = Retention(nonhit_max_age_s=180.0, hit_max_age_s=3 * 86400.0)


def retention_for(policy: Policy | None, fallback: Retention = FALLBACK_RETENTION) -> Retention:
    """The policy's retention (policy validity is the caller's: use PolicyStore.active(now))."""
    return policy.retention if policy is not None else fallback


def delete_after(read: ReadEvent, retention: Retention) -> float:
    """Unix time after which the read must be gone (counted from seen_at, never queue time)."""
    return read.seen_at + (retention.hit_max_age_s if read.hits else retention.nonhit_max_age_s)


def is_expired(read: ReadEvent, retention: Retention, now: float) -> bool:
    return now > delete_after(read, retention)
