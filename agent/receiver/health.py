"""Per-unit health from the units' status topics (agent/delivery/status.py publishes them).

`<prefix>/<unit>/status` is retained "online" / "offline" (last will) / "stopped";
`<prefix>/<unit>/heartbeat` is a JSON snapshot with the unit's queue depths and policy
version. These messages are not signed (they are operational telemetry, not evidence):
the table says what the broker relayed, and a read's provenance never depends on it.
"""
from __future__ import annotations

import json

from agent.receiver.store import HealthUpdate

STATUSES = frozenset({"online", "offline", "stopped"})


def status_topics(prefix: str) -> tuple[str, str]:
    """The two subscriptions for the health table (not shared: every receiver keeps it)."""
    return f"{prefix}/+/status", f"{prefix}/+/heartbeat"


def parse_status(prefix: str, topic: str, payload: bytes, now: float) -> HealthUpdate | None:
    """What a status or heartbeat message says about its unit; None for anything else."""
    levels = topic.split("/")
    head = prefix.split("/")
    if len(levels) != len(head) + 2 or levels[:len(head)] != head:
        return None
    unit_id, kind = levels[-2], levels[-1]
    if kind == "status":
        text = payload.decode("utf-8", errors="replace").strip()
        return HealthUpdate(unit_id, now, status=text) if text in STATUSES else None
    if kind != "heartbeat":
        return None
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("unit_id", unit_id) != unit_id:
        return None
    depth = body.get("queue_depth")
    if isinstance(depth, dict):
        depth = sum(v for v in depth.values() if isinstance(v, int))
    version = body.get("policy_version")
    return HealthUpdate(unit_id, now, heartbeat=True,
                        queue_depth=depth if isinstance(depth, int) else None,
                        policy_version=version if isinstance(version, int) else None)


def online_state(row: dict, now: float, offline_after_s: float) -> str:
    """online / offline / stopped for a health row at `now`."""
    if row.get("status") == "stopped":
        return "stopped"
    last = row.get("last_seen_at")
    if row.get("status") == "offline" or last is None or now - last > offline_after_s:
        return "offline"
    return "online"
