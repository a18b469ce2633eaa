"""The department's receiver: subscribe, check, store, then acknowledge.

One process = one MQTT 5 client on `$share/<group>/<topic>` for each read topic, so any
number of receiver processes (on one broker or a broker cluster) split the reads between
them, plus plain subscriptions to the units' status topics for the health table.

Paho's network thread only queues what arrives (never blocks or raises in a callback).
The receiver's own thread takes batches off that queue and, for each message, runs
`open_message()`: schema, destination, unseal, registered unit key, signature. Accepted
reads, rejected samples, counters and health go to the store in ONE transaction; only
after it committed is each message acknowledged (paho `manual_ack`: PUBACK after commit).
A receiver killed at any moment therefore loses nothing it acknowledged: what it had not
acknowledged the broker still holds in its session and redelivers when it comes back
(same client id), and the store drops the duplicates.

An acknowledgement is only sent on the connection the message came in on: after a
reconnect a packet id may name another message, and the broker redelivers the old one.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.delivery.mqtt_link import (IdentityError, make_ssl_context, parse_broker_url,
                                      pin_checker, verify_peer_pin)
from agent.delivery.paho_adapter import PinnedClient
from agent.supervision import Backoff
from agent.policy.signing import key_id
from agent.provenance.keys import load_x25519_private
from agent.provenance.messages import Rejected, UnitKey, open_message
from agent.receiver.config import ReceiverConfig
from agent.receiver.health import parse_status, status_topics
from agent.receiver.store import HealthUpdate, RejectSample, Store, row_from_read
from agent.receiver.validation import validate_read_message

log = logging.getLogger(__name__)

# The checking thread is CPU-bound; paho's network thread gives up the GIL at every socket
# call (several per message) and then waits up to the interpreter's switch interval (5 ms)
# to get it back, so with the default it starved the checker of messages (two receivers
# stored 1,700-1,900 reads/s, 4,100-4,800 with 0.5 ms at a similar load). `plategate
# receive` sets it for its own process (cli.py); a library user may do the same.
SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True)
class Incoming:
    """One message as paho handed it over, with the connection it came in on."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float
    generation: int


class Receiver:
    """See the module docstring. `run()` blocks until `stop` is set."""

    def __init__(self, config: ReceiverConfig, store: Store, stop: threading.Event | None = None) -> None:
        self.config = config
        self.store = store
        self.stop_event = stop or threading.Event()
        self.destinations = frozenset(config.accept.destinations)
        keys = [load_x25519_private(p) for p in config.accept.private_keys]
        self.seal_keys = {key_id(k.public_key()): k for k in keys}
        self.inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self.generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.unsubscribed = threading.Event()
        self.counts: Counter[str] = Counter()     # this process's own tallies (the store has all)
        self._unit_keys: dict[tuple[str, str], UnitKey] = {}
        self._registry_version = -1
        self.client = self._make_client()

    # --- MQTT ------------------------------------------------------------------------------

    def _make_client(self) -> PinnedClient:
        broker = self.config.broker
        self.tls, self.host, self.port = parse_broker_url(broker.url)
        client = PinnedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=broker.client_id,
                              protocol=mqtt.MQTTv5, manual_ack=True)
        client.on_socket = pin_checker(broker.server_key_sha256)   # before CONNECT
        client.enable_logger(logging.getLogger("paho.mqtt.client"))
        client.reconnect_delay_set(1, 30)
        if broker.username:
            client.username_pw_set(broker.username, broker.password)
        if self.tls:
            ca_pem = Path(broker.ca_file).read_text() if broker.ca_file else None
            client.tls_set_context(make_ssl_context(
                ca_pem, broker.server_key_sha256,
                str(broker.client_cert) if broker.client_cert else None,
                str(broker.client_key) if broker.client_key else None))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = lambda *args: self.unsubscribed.set()
        client.on_message = self._on_message
        return client

    def subscriptions(self) -> list[tuple[str, SubscribeOptions]]:
        broker = self.config.broker
        subs = [(f"$share/{broker.share_group}/{topic}", SubscribeOptions(qos=1))
                for topic in broker.topics]
        if broker.status_prefix:
            subs += [(topic, SubscribeOptions(qos=1)) for topic in status_topics(broker.status_prefix)]
        return subs

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the receiver broker=%s reason=%s", self.config.broker.url,
                      reason_code)
            return
        try:        # the pin again, on the live socket CONNACK came over (as the unit's links)
            verify_peer_pin(client.socket(), self.config.broker.server_key_sha256,
                            f"broker {self.config.broker.url}")
        except IdentityError as exc:
            log.error("receiver broker identity check failed after CONNACK: %s", exc)
            client.disconnect()
            return
        self.generation += 1
        client.subscribe(self.subscriptions())
        self.connected.set()
        log.info("receiver connected broker=%s client_id=%s session_present=%s",
                 self.config.broker.url, self.config.broker.client_id,
                 getattr(flags, "session_present", None))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        topics = [topic for topic, _ in self.subscriptions()]
        refused = [f"{topic}: {rc}" for topic, rc in zip(topics, reason_codes) if rc.is_failure]
        if refused:   # e.g. the broker's ACL: this department may not read that topic
            log.error("subscriptions refused broker=%s refused=%s", self.config.broker.url, refused)
        if len(refused) < len(reason_codes):
            self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self.stop_event.is_set():
            log.warning("receiver disconnected broker=%s reason=%s", self.config.broker.url,
                        reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        self.inbox.put(Incoming(msg.mid, msg.qos, msg.topic, bytes(msg.payload), time.time(),
                                self.generation))

    def start(self) -> None:
        """Connect (paho retries in the background) with a session the broker keeps."""
        broker = self.config.broker
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = broker.session_expiry_s
        props.ReceiveMaximum = broker.receive_maximum
        self.client.connect_async(self.host, self.port, broker.keepalive_s, clean_start=False,
                                  properties=props)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def retire(self, idle_s: float = 3.0, timeout_s: float = 600.0) -> bool:
        """Take this receiver out of its share group for good; True once drained.

        While a receiver's session exists the broker keeps assigning it a share of the reads,
        even while it is down. So: take what the broker holds for it until nothing came for
        `idle_s`, unsubscribe the shared topics, take what was still in flight the same way,
        then disconnect ending the session (session expiry 0): from then on its share goes to
        the other receivers of the group.
        """
        self.start()
        deadline = time.monotonic() + timeout_s
        try:
            if not self.subscribed.wait(30):
                log.error("retire: receiver did not subscribe broker=%s", self.config.broker.url)
                return False
            if not self._drain(idle_s, deadline):
                self.client.disconnect()          # session kept: nothing is lost, run it again
                return False
            shared = [topic for topic, _ in self.subscriptions() if topic.startswith("$share/")]
            self.unsubscribed.clear()
            self.client.unsubscribe(shared)
            if not (self.unsubscribed.wait(30) and self._drain(idle_s, deadline)):
                self.client.disconnect()
                return False
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
            self.client.disconnect(properties=props)
            log.info("receiver retired client_id=%s", self.config.broker.client_id)
            return True
        finally:
            self.client.loop_stop()

    def _drain(self, idle_s: float, deadline: float) -> bool:
        """Process batches until none came for `idle_s` (True) or `deadline` passed (False)."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            if time.monotonic() > deadline or self.stop_event.is_set():
                return False
            batch = self._take_batch()
            if batch:
                self.process(batch)
                quiet_since = time.monotonic()
        return True

    # --- the receive loop ------------------------------------------------------------------

    def run(self) -> None:
        """Take, check, store and acknowledge batches until `stop` is set."""
        self.start()
        try:
            while not self.stop_event.is_set():
                batch = self._take_batch()
                if batch:
                    self.process(batch)
        finally:
            self.close()

    def _take_batch(self) -> list[Incoming]:
        storage = self.config.storage
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + storage.batch_wait_ms / 1000.0
        while len(batch) < storage.batch_size:
            try:
                batch.append(self.inbox.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self.inbox.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _refresh_registry(self) -> None:
        version = self.store.registry_version()
        if version != self._registry_version:
            self._unit_keys = self.store.unit_keys()
            self._registry_version = version
            log.info("unit registry loaded version=%d keys=%d", version, len(self._unit_keys))

    def check(self, message: Incoming) -> tuple[tuple | None, RejectSample | None, HealthUpdate | None]:
        """(row, None, None) for an accepted read, (None, sample, None) for a rejected one,
        (None, None, update) for a status message. Never raises."""
        prefix = self.config.broker.status_prefix
        if prefix:
            update = parse_status(prefix, message.topic, message.payload, message.received_at)
            if update is not None:
                return None, None, update
        accept = self.config.accept
        try:
            read = open_message(message.payload, destinations=self.destinations,
                                unit_keys=self._unit_keys, seal_keys=self.seal_keys,
                                validate=validate_read_message, require_sealed=accept.require_sealed)
        except Rejected as exc:
            return None, RejectSample(exc.reason, exc.detail, message.topic, message.received_at,
                                      message.payload), None
        except Exception as exc:  # a message must never stop the receiver
            log.exception("unexpected error checking a message topic=%s", message.topic)
            return None, RejectSample("invalid", f"{type(exc).__name__}: {exc}", message.topic,
                                      message.received_at, message.payload), None
        return row_from_read(read, message.received_at), None, None

    def process(self, batch: list[Incoming]) -> int:
        """Check, store (one transaction) and then acknowledge `batch`; returns reads stored."""
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            try:
                self._refresh_registry()
                rows, rejects, health = [], [], []
                counts: Counter[str] = Counter()
                seen: dict[str, float] = {}
                for message in batch:
                    row, reject, update = self.check(message)
                    if row is not None:
                        rows.append(row)
                        seen[row[2]] = max(seen.get(row[2], 0.0), message.received_at)
                    elif reject is not None:
                        rejects.append(reject)
                        counts[reject.reason] += 1
                    elif update is not None:
                        health.append(update)
                health += [HealthUpdate(unit_id, at) for unit_id, at in seen.items()]
                stored = self.store.commit_batch(
                    rows, rejects, counts, health,
                    samples_per_reason=self.config.storage.samples_per_reason)
                break
            except Exception as exc:  # database down, lock timeout...: nothing acknowledged
                if self.stop_event.is_set():
                    log.error("batch not stored at stop (redelivered later) size=%d error=%s",
                              len(batch), exc)
                    return 0
                delay = backoff.next_delay()
                log.error("cannot store batch size=%d error=%s retry_in_s=%.1f", len(batch),
                          exc, delay)
                self.stop_event.wait(delay)
                try:
                    self.store.recover()
                except Exception as again:  # still unreachable: the next round tries again
                    log.error("database still unreachable error=%s", again)
        self.counts.update(counts)
        self.counts["stored"] += stored
        self.counts["duplicate"] += len(rows) - stored
        self._ack(batch)
        return stored

    def _ack(self, batch: list[Incoming]) -> None:
        generation = self.generation
        for message in batch:
            if message.qos > 0 and message.generation == generation:
                self.client.ack(message.mid, message.qos)
