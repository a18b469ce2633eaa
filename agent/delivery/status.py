"""Unit availability and heartbeat over MQTT.

`<prefix>/<unit_id>/status` is retained: "online" once connected, "offline" as the last
will (the broker publishes it if the unit vanishes: power cut, crash, link gone past
keepalive) and again on a clean shutdown: the availability convention Home Assistant and
Frigate users expect, so only two values exist. `<prefix>/<unit_id>/heartbeat` carries a
JSON snapshot every `interval_s`: whatever `stats_fn()` returns (fps, dropped frames, queue
depths, oldest queued age, policy and model versions ...) plus uptime, disk use and `state`
("running"; a last heartbeat with "stopped" on a clean shutdown tells it from a crash).

The status broker is checked like a destination's (CA and key pin before CONNECT, and the
pin again on the live socket after CONNACK, before "online" is published); paho's
own network thread runs the connection and its reconnects, and the callbacks only publish
(non-blocking) or set flags.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.delivery.mqtt_link import (PROTOCOLS, DestinationCredentials, IdentityError,
                                      egress_endpoint, make_ssl_context, pin_checker,
                                      validate_topic, verify_peer_pin)
from agent.delivery.paho_adapter import PinnedClient
from agent.delivery.paho_log import paho_logger

log = logging.getLogger(__name__)

STATUS_SCHEMA = "plategate.heartbeat/1"


@dataclass(frozen=True)
class BrokerSettings:
    """The unit's own status broker (device config); identity checked like a destination's."""

    url: str
    server_key_sha256: str | None = None
    ca_pem: str | None = None
    credentials: DestinationCredentials = field(default_factory=DestinationCredentials)
    keepalive: int = 30


class StatusPublisher:
    """Retained status with last will, and a periodic heartbeat (see module docstring)."""

    def __init__(self, broker: BrokerSettings, unit_id: str, topic_prefix: str,
                 stats_fn: Callable[[], dict], stop: threading.Event, interval_s: float = 60.0,
                 disk_path: Path = Path("/")) -> None:
        self.broker = broker
        self.unit_id = unit_id
        self.status_topic = validate_topic(f"{topic_prefix}/{unit_id}/status")
        self.heartbeat_topic = validate_topic(f"{topic_prefix}/{unit_id}/heartbeat")
        self.stats_fn = stats_fn
        self.stop_event = stop
        self.interval_s = interval_s
        self.disk_path = disk_path
        self.tls, self.host, self.port = egress_endpoint(broker.url, f"status broker {broker.url!r}")
        self._started_at = time.monotonic()
        self._connected = threading.Event()
        self._halt = threading.Event()       # stop() of this publisher only
        self._thread: threading.Thread | None = None
        self.heartbeats = 0
        creds = broker.credentials
        self.protocol = PROTOCOLS[creds.protocol]
        kwargs = {"client_id": creds.client_id or f"plategate-{unit_id}-status",
                  "protocol": self.protocol}
        client = PinnedClient(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        client.on_socket = self._check_socket
        client.enable_logger(paho_logger())
        client.reconnect_delay_set(1, 60)
        if creds.username:
            client.username_pw_set(creds.username, creds.password)
        if self.tls:
            client.tls_set_context(make_ssl_context(broker.ca_pem, broker.server_key_sha256,
                                                    creds.client_cert, creds.client_key))
        client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self._identity_failures_seen = 0
        self.identity_failures = 0
        self.peer_pin: str | None = None
        self._check_pin = pin_checker(broker.server_key_sha256)
        self.client = client

    def _check_socket(self, sock) -> None:
        """The same identity checks as a destination link: the pin right after the TLS
        handshake, before CONNECT (here), and again on the live socket after CONNACK."""
        try:
            self._check_pin(sock)
        except IdentityError as exc:
            self.identity_failures += 1
            self.peer_pin = exc.got
            raise

    # paho callbacks: publish (non-blocking) or set flags only
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("status broker refused connection broker=%s reason=%s", self.broker.url,
                        reason_code)
            return
        try:
            self.peer_pin = verify_peer_pin(client.socket(), self.broker.server_key_sha256,
                                            f"status broker {self.broker.url}")
        except IdentityError as exc:
            self.identity_failures += 1
            log.critical("ALERT status broker identity check failed after CONNACK broker=%s "
                         "expected_pin=%s got_pin=%s; disconnecting", self.broker.url,
                         exc.expected, exc.got)
            client.disconnect()
            return
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()

    def _on_connect_fail(self, client, userdata) -> None:
        if self.identity_failures > self._identity_failures_seen:
            self._identity_failures_seen = self.identity_failures
            log.critical("ALERT status broker identity check failed broker=%s expected_pin=%s "
                         "got_pin=%s; not connecting", self.broker.url,
                         self.broker.server_key_sha256, self.peer_pin)
        else:
            log.warning("status broker connect failed broker=%s", self.broker.url)

    def start(self) -> None:
        """Connect in the background (paho retries) and start the heartbeat thread."""
        try:
            self.client.connect_async(self.host, self.port, self.broker.keepalive)
        except ValueError as exc:
            raise ValueError(f"status broker {self.broker.url}: {exc}") from exc
        self.client.loop_start()
        self._thread = threading.Thread(target=self._beat, name="status-heartbeat", daemon=True)
        self._thread.start()

    def snapshot(self, state: str = "running") -> dict:
        """The heartbeat body: stats_fn() plus state, uptime and disk use (never raises)."""
        try:
            body = dict(self.stats_fn())
        except Exception as exc:  # a broken stats source must not stop the heartbeat
            log.exception("heartbeat stats failed")
            body = {"stats_error": type(exc).__name__}
        body["schema"] = STATUS_SCHEMA
        body["unit_id"] = self.unit_id
        body["state"] = state
        body["time"] = round(time.time(), 3)
        body["uptime_s"] = round(time.monotonic() - self._started_at, 1)
        try:
            usage = shutil.disk_usage(self.disk_path)
            body["disk"] = {"path": str(self.disk_path), "total_bytes": usage.total,
                            "used_bytes": usage.used, "free_bytes": usage.free,
                            "used_ratio": round(usage.used / usage.total, 4) if usage.total else None}
        except OSError as exc:
            body["disk"] = {"path": str(self.disk_path), "error": str(exc)}
        return body

    def _beat(self) -> None:
        next_at = 0.0
        while not (self.stop_event.is_set() or self._halt.is_set()):
            if self._connected.is_set() and time.monotonic() >= next_at:
                try:
                    self.publish_heartbeat()
                except Exception:  # keep beating; the next one may go through
                    log.exception("heartbeat publish failed broker=%s", self.broker.url)
                next_at = time.monotonic() + self.interval_s
            self._halt.wait(min(0.5, self.interval_s))

    def publish_heartbeat(self, state: str = "running") -> mqtt.MQTTMessageInfo:
        payload = json.dumps(self.snapshot(state), default=str, separators=(",", ":")).encode()
        props = None
        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = max(1, int(self.interval_s * 3))
        info = self.client.publish(self.heartbeat_topic, payload, qos=1, retain=False, properties=props)
        self.heartbeats += 1
        return info

    def stop(self, timeout: float = 5.0) -> None:
        """A last heartbeat with state "stopped", retained "offline", then a clean DISCONNECT
        (so the broker does not send the will as well)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout)    # no running heartbeat after the stopped one
        if self._connected.is_set():
            deadline = time.monotonic() + timeout
            sent = [self.publish_heartbeat("stopped"),
                    self.client.publish(self.status_topic, b"offline", qos=1, retain=True)]
            try:
                for info in sent:
                    info.wait_for_publish(max(0.05, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                log.warning("status 'offline' not confirmed broker=%s", self.broker.url)
        self.client.disconnect()
        self.client.loop_stop()
