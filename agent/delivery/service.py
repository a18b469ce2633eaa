"""The delivery service: one sender thread per destination, outbox -> gate -> MQTT.

Each sender owns its destination's MqttLink and does everything for it on one thread:
connect (identity first), take the next queued deliveries in order, pass each through
the egress gate, publish at QoS 1 with a bounded window in flight, and delete from the
outbox only what the broker acknowledged (PUBACK with a success code). A connection
that drops loses nothing: the next connection starts again from the head of the
queue, so delivery is at-least-once and receivers drop duplicates by read id.

Destinations come from the active policy: a destination added by a policy gets a
sender, one removed stops being served (its backlog is purged by the outbox re-check),
and a changed transport (broker, topic, CA, pin) replaces the link. A listed destination
that may receive nothing at all under the active policy (engine.may_receive) gets no
connection: its sender opens none and closes the one it has (DESIGN invariant 5).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from agent.delivery.gate import EgressGate
from agent.supervision import Backoff, supervise
from agent.delivery.mqtt_link import (Ack, DestinationCredentials, IdentityError,
                                      LinkError, MqttLink, Waker)
from agent.delivery.outbox import Outbox, OutboxError
from agent.delivery.records import Delivery
from agent.policy.decision import Decision, Destination, Policy, may_receive

log = logging.getLogger(__name__)

WINDOW = 1024           # messages in flight per destination (the sender bounds it, not paho),
                        # at most the broker's Receive Maximum; a backlog drains per round trip
IDLE_WAIT_S = 0.05      # how long an idle sender sleeps between looks at its queue
ACK_POLL_S = 0.01       # socket wait while acks are outstanding
REFILL_FRACTION = 4     # with messages in flight, fetch more once a quarter of the window is free
REWIND_WAIT_S = 0.05    # wait before re-fetching a refused delivery that stayed queued


class _Sender:
    """One destination's sender thread (see module docstring)."""

    def __init__(self, service: "DeliveryService", destination_id: str) -> None:
        self.service = service
        self.destination_id = destination_id
        self.wake = Waker()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"sender-{destination_id}",
                                       daemon=True)
        self.link: MqttLink | None = None
        self.inflight: OrderedDict[int, Delivery] = OrderedDict()
        self.cursor = 0
        self.sent = 0
        self.refused = 0
        self.broker_refusals = 0
        self.identity_failures = 0
        self.connected = False
        self.last_error: str | None = None
        self._backoff = Backoff(base=0.5, cap=60.0, floor=0.05)
        self._retry_at = 0.0
        self._stalled = False
        self._kick = False                    # a policy change: retry at once, not after backoff
        self._acked: list[Delivery] = []      # PUBACKed in this poll, for the outbox
        self._rewound = False                 # a refused delivery stayed queued: re-fetch
        self.progress_at = time.monotonic()   # heartbeat for the systemd watchdog (runtime/watchdog.py)
        self._closed_by: str | None = None    # the rule that leaves this destination nothing
        self._verdict: tuple | None = None    # (policy, destination, until, may_receive verdict)

    def start(self) -> None:
        self.thread.start()

    def running(self) -> bool:
        return self.thread.is_alive() and not (self.service.stopped or self.stopping.is_set())

    @property
    def name(self) -> str:
        return f"sender-{self.destination_id}"

    # --- loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        svc = self.service

        def work() -> None:
            while not (svc.stopped or self.stopping.is_set()):
                self.progress_at = time.monotonic()
                self._step()

        supervise(work, self._backoff, self._crashed, self._sleep)
        self._shutdown()

    def _crashed(self, exc: Exception) -> bool:
        """A sender must not die: log, drop the link, back off, carry on."""
        log.error("sender error dest=%s", self.destination_id, exc_info=exc)
        self._drop_link()
        return True

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not (self.service.stopped or self.stopping.is_set() or self._kick):
            left = end - time.monotonic()
            if left <= 0:
                return
            self.progress_at = time.monotonic()  # waiting on purpose is not hanging
            self.wake.wait(min(left, 0.2))

    def _destination(self, now: float) -> tuple[Policy, Destination] | None:
        """The active policy and this destination, or None when no read may go to it now:
        then the sender holds no connection at all (not even an idle one)."""
        policy = self.service.policy_store.active(now)
        dest = policy.destination(self.destination_id) if policy else None
        if dest is None:
            return None
        verdict = self._may_receive(dest, policy, now)
        closed = None if verdict.allowed else verdict.rule_id
        if closed != self._closed_by:
            self._closed_by = closed
            if closed is not None:
                log.info("destination receives nothing; no connection dest=%s policy_version=%d "
                         "rule_id=%s", self.destination_id, policy.version, closed)
        return (policy, dest) if verdict.allowed else None

    def _may_receive(self, dest: Destination, policy: Policy, now: float) -> Decision:
        """may_receive(), asked again on a policy change and at most once a second otherwise
        (for a declaration that expires): the gate still checks every message meanwhile."""
        cached = self._verdict
        if cached is not None and cached[0] is policy and cached[1] is dest and time.monotonic() < cached[2]:
            return cached[3]
        verdict = may_receive(dest, policy, now)
        self._verdict = (policy, dest, time.monotonic() + 1.0, verdict)
        return verdict

    def policy_changed(self) -> None:
        """Called from the policy store's thread: re-read the destination now."""
        self._kick = True
        self.wake.set()

    def _step(self) -> None:
        if self._kick:
            self._kick = False
            self._retry_at = 0.0      # the broker or its identity may have changed: try now
        now = time.time()
        found = self._destination(now)
        if found is None:
            # No policy, or this destination is not listed: nothing may go out.
            if self.link is not None:
                self._drop_link(clean=True)
            self.wake.wait(IDLE_WAIT_S * 4)
            return
        policy, dest = found
        if self.link is not None and self.link.transport != dest.transport:
            log.info("transport changed dest=%s; reconnecting", self.destination_id)
            self._drop_link(clean=True)
        if self.link is None or not self.link.connected:
            if time.monotonic() < self._retry_at:
                self._sleep(self._retry_at - time.monotonic())
                return
            self._connect(dest)
            return
        link = self.link
        link.poll(0.0)
        self._handle_acks(link)
        if not link.connected:
            self._drop_link()
            self._retry_at = time.monotonic() + self._backoff.next_delay()
            return
        if self._stalled:
            if self.inflight:       # let the rest of the refused round come back first
                link.poll(ACK_POLL_S * 10, self.wake)
                self._handle_acks(link)
                return
            if time.monotonic() < self._retry_at:
                self._sleep(min(0.2, self._retry_at - time.monotonic()))
                return
            self._flush_acked(force=True)
            self._stalled, self.cursor = False, 0   # retry from the head of the queue
        published = self._publish_some(link, policy, dest, now)
        if self._rewound:
            # A refused delivery stays queued (see _publish_some): give the policy re-check
            # a moment to finish before fetching it again, without missing PUBACKs.
            self._rewound = False
            link.poll(REWIND_WAIT_S, self.wake)
            self._handle_acks(link)
            return
        if not published:
            # Nothing more to send now: sleep until a PUBACK, new work or a stop request.
            link.poll(IDLE_WAIT_S if not self.inflight else ACK_POLL_S * 10, self.wake)
            self._handle_acks(link)

    def _connect(self, dest: Destination) -> None:
        svc = self.service
        try:
            link = MqttLink(self.destination_id, dest.transport,
                            svc.credentials.get(self.destination_id))
        except ValueError as exc:
            self.last_error = str(exc)
            log.error("destination misconfigured dest=%s error=%s", self.destination_id, exc)
            self._retry_at = time.monotonic() + self._backoff.next_delay()
            return
        try:
            link.connect()
        except IdentityError as exc:
            self.identity_failures += 1
            self.last_error = str(exc)
            log.critical("ALERT destination identity check failed dest=%s broker=%s "
                         "expected_pin=%s got_pin=%s; nothing delivered", self.destination_id,
                         dest.transport.broker_url, exc.expected, exc.got)
            svc.audit.record("delivery.refused", destination=self.destination_id,
                             reason="identity", detail=str(exc), expected_pin=exc.expected,
                             got_pin=exc.got, queued=svc.outbox.depth(self.destination_id))
            svc.audit.flush()
            self._retry_at = time.monotonic() + self._backoff.next_delay()
            return
        except LinkError as exc:
            self.last_error = str(exc)
            delay = self._backoff.next_delay()
            log.warning("link connect failed dest=%s error=%s retry_in_s=%.2f",
                        self.destination_id, exc, delay)
            self._retry_at = time.monotonic() + delay
            return
        self.link = link
        self.connected = True
        self.inflight.clear()
        self.cursor = 0
        self._stalled = False
        self._backoff.reset()

    def _publish_some(self, link: MqttLink, policy: Policy, dest: Destination, now: float) -> int:
        window = min(WINDOW, link.receive_maximum)
        room = window - len(self.inflight)
        if room <= 0 or (self.inflight and room < window // REFILL_FRACTION):
            # Refill the window in large batches, not one slot per PUBACK: each fetch costs
            # an outbox query and a socket write, and at one message each (what a full window
            # of signed messages drifted into) the sender spent most of its time on them.
            return 0
        batch = self.service.outbox.next_batch(self.destination_id, self.cursor, room)
        count = 0
        gate = self.service.gate
        link.begin_batch()
        try:
            for delivery in batch:
                message, decision, queued = gate.release(delivery, now, dest.transport)
                if message is None:
                    self.refused += 1
                    if queued:
                        # Held, or a stale copy of a row a policy change re-wrote: nothing
                        # after it goes out before it (order); it is fetched again shortly.
                        self._rewound = True
                        break
                    self.cursor = delivery.seq
                    continue
                self.cursor = delivery.seq
                try:
                    mid = link.publish(message)
                except LinkError as exc:
                    # Connection gone under us: the next poll drops the link and the next
                    # connection starts again from the head of the queue.
                    self.last_error = str(exc)
                    log.warning("publish failed dest=%s read_id=%s error=%s",
                                self.destination_id, delivery.read_id, exc)
                    break
                self.inflight[mid] = delivery
                count += 1
            if count and self.service.policy_store.active(time.time()) is not policy:
                # The policy changed while this batch was checked and framed: nothing of it
                # has reached the socket yet, so withdraw it all and check it again under
                # the new policy (a revoked destination must not get even one more message).
                withdrawn = [self.inflight.pop(mid) for mid in link.discard_batch()
                             if mid in self.inflight]
                if withdrawn:
                    self.cursor = min(d.seq for d in withdrawn) - 1
                    count -= len(withdrawn)
                    log.info("policy changed mid-batch; withdrew dest=%s messages=%d",
                             self.destination_id, len(withdrawn))
        finally:
            link.end_batch()
        return count

    def _handle_acks(self, link: MqttLink) -> None:
        if not link.acks:
            self._flush_acked(force=False)
            return
        done: list[Delivery] = []
        while link.acks:
            ack: Ack = link.acks.popleft()
            delivery = self.inflight.pop(ack.mid, None)
            if delivery is None:
                continue
            if ack.ok:
                done.append(delivery)
                continue
            # The broker refused it (e.g. 0x87 not authorised by its ACL): keep it queued,
            # retry the queue from its head after a backoff.
            self.broker_refusals += 1
            self.last_error = f"broker refused publish: {ack.reason} (0x{ack.reason_code:02x})"
            if not self._stalled:   # one backoff step per refused round, not per message
                self._stalled = True
                self._retry_at = time.monotonic() + self._backoff.next_delay()
            log.error("delivery refused by broker dest=%s read_id=%s reason_code=0x%02x "
                      "reason=%s retry_in_s=%.2f", self.destination_id, delivery.read_id,
                      ack.reason_code, ack.reason, max(0.0, self._retry_at - time.monotonic()))
        if done:
            self._acked.extend(done)
            if not self._stalled:
                self._backoff.reset()
        self._flush_acked(force=False)

    def _flush_acked(self, force: bool) -> None:
        """Hand PUBACKed deliveries to the outbox (audited as sent at once; deleted with the
        next commit) and let it commit pending deletes if they have waited long enough."""
        outbox = self.service.outbox
        if self._acked:
            outbox.mark_sent(self._acked, time.time())
            self.sent += len(self._acked)
            self._acked = []
        try:
            outbox.settle_sent(force=force)
        except OutboxError as exc:
            # Still queued on disk: they will be sent again (receivers drop duplicates).
            if outbox.disk.active:   # the outbox's disk condition has said so, once
                log.debug("cannot delete sent deliveries dest=%s error=%s", self.destination_id, exc)
            else:
                log.exception("cannot delete sent deliveries dest=%s", self.destination_id)

    def _drop_link(self, clean: bool = False) -> None:
        self._flush_acked(force=True)
        link, self.link = self.link, None
        self.connected = False
        self.inflight.clear()
        self.cursor = 0
        if link is not None:
            link.close(timeout=1.0 if clean else 0.0)

    def _shutdown(self) -> None:
        """Wait (bounded) for outstanding PUBACKs, then disconnect cleanly."""
        link = self.link
        if link is not None and link.connected:
            deadline = time.monotonic() + self.service.drain_timeout
            while self.inflight and link.connected and time.monotonic() < deadline:
                link.poll(ACK_POLL_S)
                self._handle_acks(link)
        self._drop_link(clean=True)
        self.wake.close()

    def stats(self) -> dict:
        return {"connected": self.connected, "sent": self.sent, "refused": self.refused,
                "broker_refusals": self.broker_refusals,
                "identity_failures": self.identity_failures, "inflight": len(self.inflight),
                "last_error": self.last_error}


class DeliveryService:
    """Runs a sender per destination of the active policy; see the module docstring."""

    def __init__(self, outbox: Outbox, gate: EgressGate, policy_store, audit,
                 credentials: Mapping[str, DestinationCredentials], stop: threading.Event,
                 drain_timeout: float = 5.0, purge_interval_s: float = 60.0) -> None:
        self.outbox = outbox
        self.gate = gate
        self.policy_store = policy_store
        self.audit = audit
        self.credentials = dict(credentials)
        self.stop_event = stop
        self._halt = threading.Event()     # stop() of this service only
        self.drain_timeout = drain_timeout
        self.purge_interval_s = purge_interval_s
        self._senders: dict[str, _Sender] = {}
        self._janitor: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started = False

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set() or self._halt.is_set()

    def start(self) -> None:
        """Follow the outbox and the policy store, then start a sender per destination."""
        self.outbox.add_listener(self._on_queued)
        self.policy_store.subscribe(self._on_policy)
        with self._lock:
            self._started = True
        self._sync_senders(self.policy_store.active(time.time()))
        self._janitor = threading.Thread(target=self._purge_loop, name="outbox-retention",
                                         daemon=True)
        self._janitor.start()

    def _purge_loop(self) -> None:
        """Retention inside the queue: delete (audited) what is past its age, every interval."""
        while not self.stopped:
            try:
                self.outbox.purge_expired(time.time())
            except Exception as exc:  # keep trying; the outbox logs what failed
                if self.outbox.disk.active:   # the outbox's disk condition has said so, once
                    log.debug("retention purge failed error=%s", exc)
                else:
                    log.exception("retention purge failed")
            self._halt.wait(self.purge_interval_s)

    def _on_policy(self, policy: Policy | None) -> None:
        """Policy store callback: start senders for new destinations; never raises."""
        try:
            self._sync_senders(policy)
            for sender in list(self._senders.values()):
                sender.policy_changed()
        except Exception:
            log.exception("delivery service could not follow a policy change")

    def _on_queued(self, destination_ids) -> None:
        for dest_id in destination_ids:
            sender = self._senders.get(dest_id)
            if sender is not None:
                sender.wake.set()

    def _sync_senders(self, policy: Policy | None) -> None:
        with self._lock:
            if not self._started or self.stopped:
                return
            wanted = [d.id for d in policy.destinations] if policy else []
            for dest_id in wanted:
                if dest_id not in self._senders:
                    sender = _Sender(self, dest_id)
                    self._senders[dest_id] = sender
                    sender.start()
                    log.info("sender started dest=%s", dest_id)
            # Senders of destinations no longer listed stay: they idle with no link
            # (nothing may go out) and resume if a later policy lists them again.

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every sender: outstanding PUBACKs awaited (bounded), clean DISCONNECT."""
        self._halt.set()
        with self._lock:
            senders = list(self._senders.values())
        for sender in senders:
            sender.wake.set()
        deadline = time.monotonic() + timeout
        for sender in senders:
            sender.thread.join(max(0.0, deadline - time.monotonic()))
            if sender.thread.is_alive():
                log.error("sender did not stop in time dest=%s", sender.destination_id)
        if self._janitor is not None:
            self._janitor.join(max(0.0, deadline - time.monotonic()))

    def senders(self) -> list[_Sender]:
        """The running senders (the systemd watchdog checks that each keeps making progress)."""
        with self._lock:
            return list(self._senders.values())

    def stats(self) -> dict:
        now = time.time()
        with self._lock:
            senders = dict(self._senders)
        depths = self.outbox.depths()
        return {
            "queue_depth": {d: depths.get(d, 0) for d in set(depths) | set(senders)},
            "oldest_queued_age_s": self.outbox.oldest_age(now),
            "sent": {d: s.sent for d, s in senders.items()},
            "destinations": {d: s.stats() for d, s in senders.items()},
            "outbox": {k: v for k, v in self.outbox.stats(now).items() if k != "depth"},
            "gate": {"passed": self.gate.passed, "refused": self.gate.refused},
        }


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until true or `timeout` (for the soak runner and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
