"""A destination that may receive nothing gets no connection at all (issue 14, item 2).

Regression: the unit opened a live MQTT session to every listed destination, prohibited
ones included, so the prohibited agency's broker saw the unit connect, its client id and
its liveness. Checked here with the broker's own log of connections (mosquitto's), not
with a subscriber: nothing but the unit ever connects to the "feds" broker in these tests.
"""
from __future__ import annotations

import json
from functools import partial
import logging
import time

import pytest

from agent.delivery.service import wait_until as _wait_until
from helpers.soak import build_stack, destination_doc, make_read, policy_doc
from agent.policy.schema import format_time

pytestmark = pytest.mark.integration
wait_until = partial(_wait_until, timeout=30.0)


def feds_doc(broker, **changes) -> dict:
    doc = destination_doc("feds", broker.url, "pg/feds/reads", pin=broker.pin,
                          purposes=("stolen_vehicle", "immigration_enforcement"))
    rule = changes.pop("rule", None)
    if rule:
        doc["rule"].update(rule)
    doc.update(changes)
    return doc


def closed_logged(caplog, dest: str = "feds") -> bool:
    return any("destination receives nothing; no connection" in r.getMessage()
               and f"dest={dest}" in r.getMessage() for r in caplog.records)


CASES = {
    "prohibited-class": (dict(**{"class": "federal_immigration"}), {}),
    "jurisdiction": (dict(jurisdiction="US-TX"), {"allowed_jurisdictions": ["US-CT"]}),
    "expired-declaration": (dict(declaration={"id": "mou-1", "expires_at": format_time(time.time() - 60)}), {}),
    "mode-none": (dict(rule={"mode": "none"}), {}),
    "every-purpose-prohibited": (dict(purposes=["immigration_enforcement"]), {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_destination_that_may_receive_nothing_is_never_connected(case, broker_factory, collector_factory,
                                                                 tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="agent.delivery.service")
    city_broker, feds_broker = broker_factory(), broker_factory()
    city = collector_factory(city_broker)
    changes, prohibitions = CASES[case]
    now = time.time()
    doc = policy_doc(1, [destination_doc("city", city_broker.url, "pg/city/reads", pin=city_broker.pin),
                         feds_doc(feds_broker, **changes)], now,
                     prohibited_classes=["federal_immigration"], prohibited_purposes=["immigration_enforcement"])
    doc["prohibitions"]["allowed_jurisdictions"] = prohibitions.get("allowed_jurisdictions", [])
    stack = build_stack(tmp_path / "unit")
    try:
        stack.rig.install(doc)
        stack.service.start()
        stack.outbox.accept([make_read(i, now, hit=i % 2 == 0) for i in range(6)], now)
        # Positive signals: the allowed destination got every read, and the feds sender has
        # looked at its destination and decided it may receive nothing.
        assert city.wait_count(6, timeout=30)
        assert wait_until(lambda: closed_logged(caplog))
        assert feds_broker.connections() == [], feds_broker.connections()
        assert stack.service.stats()["destinations"]["feds"]["connected"] is False
    finally:
        stack.close()


def test_policy_changes_open_and_close_the_link(broker_factory, collector_factory, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="agent.delivery.service")
    city_broker, feds_broker = broker_factory(), broker_factory()
    city = collector_factory(city_broker)
    city_doc = destination_doc("city", city_broker.url, "pg/city/reads", pin=city_broker.pin)
    prohibited = dict(prohibited_classes=["federal_immigration"])
    stack = build_stack(tmp_path / "unit")
    try:
        stack.rig.install(policy_doc(1, [city_doc, feds_doc(feds_broker, **{"class": "federal_immigration"})],
                                     time.time(), **prohibited))
        stack.service.start()
        now = time.time()
        stack.outbox.accept([make_read(i, now) for i in range(3)], now)
        assert city.wait_count(3) and wait_until(lambda: closed_logged(caplog))
        assert feds_broker.connections() == []

        # v2 allows the destination: the unit connects (the broker's log shows its client id).
        stack.rig.install(policy_doc(2, [city_doc, feds_doc(feds_broker)], time.time(), **prohibited))
        assert wait_until(lambda: any(c.endswith("-feds") for c in feds_broker.client_ids()))
        now = time.time()
        stack.outbox.accept([make_read(i, now, prefix="b") for i in range(3)], now)
        assert wait_until(lambda: stack.outbox.depth("feds") == 0)

        # v3 prohibits it again: the unit disconnects and does not come back.
        caplog.clear()
        stack.rig.install(policy_doc(3, [city_doc, feds_doc(feds_broker, **{"class": "federal_immigration"})],
                                     time.time(), **prohibited))
        unit_id = next(c for c in feds_broker.client_ids() if c.endswith("-feds"))
        assert wait_until(lambda: f"Client {unit_id} disconnected" in feds_broker.log_path.read_text())
        seen = len(feds_broker.connections())
        now = time.time()
        stack.outbox.accept([make_read(i, now, prefix="c") for i in range(3)], now)
        assert city.wait_for(lambda msgs: {json.loads(m.payload)["read_id"] for m in msgs}
                             >= {f"c{i:08d}" for i in range(3)})
        assert wait_until(lambda: closed_logged(caplog))
        assert len(feds_broker.connections()) == seen
    finally:
        stack.close()
