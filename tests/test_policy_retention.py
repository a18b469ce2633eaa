"""Retention helpers: counted from seen_at; hits kept longer; strict fallback without a policy."""
from __future__ import annotations

from agent.policy.model import Retention
from agent.policy.retention import FALLBACK_RETENTION, delete_after, is_expired, retention_for
from agent.reads import HotlistHit, ReadEvent


def test_retention() -> None:
    ret = Retention(nonhit_max_age_s=180.0, hit_max_age_s=86400.0)
    plain = ReadEvent("A", 0.9, 1000.0, "c")
    hit = ReadEvent("A", 0.9, 1000.0, "c", hits=(HotlistHit("l", 1, "stolen_vehicle", "s"),))
    assert delete_after(plain, ret) == 1180.0 and delete_after(hit, ret) == 87400.0
    assert not is_expired(plain, ret, 1180.0) and is_expired(plain, ret, 1180.1)
    assert retention_for(None) == FALLBACK_RETENTION
    assert FALLBACK_RETENTION.nonhit_max_age_s == 180.0
