"""A positive signal for "nothing (more) arrived": a sentinel message.

Instead of sleeping and then asserting that a subscriber got nothing (which passes if the
leak comes after the sleep), a test waits for what must happen first (an audit record, a
queue depth of 0), then publishes a sentinel through the subscriber's own connection and
waits until the broker has routed it back: everything routed to that subscriber before
the sentinel has arrived by then, and the test asserts on exactly that.
"""
from __future__ import annotations

import uuid

SENTINEL_TOPIC = "plategate-test/sentinel"


def until_sentinel(collector, timeout: float = 15.0) -> list:
    """Publish a sentinel via `collector`'s own client, wait for it to come back, and
    return the messages the collector had received before it (sentinel excluded)."""
    topic = collector.topic if not any(c in collector.topic for c in "+#") else SENTINEL_TOPIC
    marker = f"sentinel-{uuid.uuid4().hex}".encode()
    collector.client.publish(topic, marker, qos=1)
    if not collector.wait_for(lambda msgs: any(m.payload == marker for m in msgs), timeout):
        raise TimeoutError(f"sentinel on {topic} did not come back within {timeout}s")
    with collector._cond:        # take the sentinel out again: later checks parse every message
        messages = list(collector.messages)
        cut = next(i for i, m in enumerate(messages) if m.payload == marker)
        collector.messages[:] = [m for m in messages if not m.payload.startswith(b"sentinel-")]
    return [m for m in messages[:cut] if not m.payload.startswith(b"sentinel-")]
