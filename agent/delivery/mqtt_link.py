"""One MQTT connection to one destination's broker, with its identity checked first.

A link is driven by a single thread (the destination's sender): it calls `connect()`,
`publish()` and `poll()`; paho's callbacks run inside `poll()` on that same thread and
only append to deques, so they never block or raise.

Identity (DESIGN.md invariant 5): for mqtts:// the server certificate is verified
against the destination's CA (when the policy gives one), and the SHA-256 of the
server's SubjectPublicKeyInfo is compared with the policy's pin right after the TLS
handshake, before the MQTT CONNECT (so no credentials go to an impostor), and again on
the live socket once CONNACK arrived, before the first publish. Every connection is a
fresh paho client: nothing queued on a previous connection can reach a new one before
it has passed these checks; unacknowledged messages are re-sent from the outbox.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.delivery.gate import Sendable
from agent.delivery.paho_adapter import PinnedClient, mqtt_string, publish_properties
from agent.delivery.paho_log import paho_logger
from agent.policy.decision import (Transport, is_loopback_host,  # validate_topic: status.py too
                                   validate_topic)

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 268435455 - 65535 - 1024   # MQTT's largest packet, less topic and properties
PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}
SESSION_EXPIRY_S = 7 * 24 * 3600


class LinkError(ConnectionError):
    """The link could not connect or lost its connection; the message says to what and why."""


class IdentityError(LinkError):
    """The server is not the destination the policy names (CA or key pin mismatch)."""

    def __init__(self, message: str, expected: str | None = None, got: str | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


def parse_broker_url(url: str) -> tuple[bool, str, int]:
    """(tls, host, port) of mqtt://host[:port] or mqtts://host[:port]; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"broker_url {url!r}: must be mqtt://host[:port] or mqtts://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"broker_url {url!r}: must not carry a path, query or credentials")
    tls = parts.scheme == "mqtts"
    return tls, parts.hostname, parts.port or (8883 if tls else 1883)


def egress_endpoint(url: str, owner: str) -> tuple[bool, str, int]:
    """`parse_broker_url` for a link the unit sends on (reads, status), refusing plain mqtt://
    to anything but a loopback address: the policy parser and the config loader refuse such a
    URL already, and the links themselves never open one. `owner` names the link in the error."""
    tls, host, port = parse_broker_url(url)
    if not tls and not is_loopback_host(host):
        raise ValueError(f"{owner}: plain mqtt:// only to a loopback address")
    return tls, host, port


def spki_sha256_of_der_cert(der_cert: bytes) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo (DER) of a DER certificate: the pin format."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_der_x509_certificate(der_cert)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@dataclass(frozen=True)
class DestinationCredentials:
    """How this unit logs in to a destination's broker (from the device config, not the policy)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_cert: str | None = None      # path of the PEM client certificate
    client_key: str | None = None       # path of its PEM private key
    protocol: str = "5"                 # "5" or "3.1.1"
    client_id: str | None = None        # default: plategate-<hostname>-<destination id>

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r}: must be one of {sorted(PROTOCOLS)}")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key: give both or neither")

    def __repr__(self) -> str:
        return (f"DestinationCredentials(username={self.username!r}, "
                f"password={'<redacted>' if self.password else None}, "
                f"client_cert={self.client_cert!r}, client_key={self.client_key!r}, "
                f"protocol={self.protocol!r}, client_id={self.client_id!r})")


def pin_checker(expected_pin: str | None) -> Callable[[socket.socket], None]:
    """The check a link runs on its socket right after the TLS handshake, before CONNECT:
    the server's key must match `expected_pin` (SPKI SHA-256), else IdentityError."""
    def check(sock: socket.socket) -> None:
        if not expected_pin or not isinstance(sock, ssl.SSLSocket):
            return
        der = sock.getpeercert(binary_form=True)
        got = spki_sha256_of_der_cert(der) if der else None
        if not (got and hmac.compare_digest(got, expected_pin.lower())):
            raise IdentityError("server key pin mismatch", expected_pin, got)
    return check


def verify_peer_pin(sock: object, expected_pin: str | None, where: str) -> str | None:
    """The second pin check, on the live socket CONNACK came over: returns the peer's pin
    (None without TLS), raises IdentityError when a pin is expected and differs."""
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    got = spki_sha256_of_der_cert(der) if der else None
    if expected_pin and not (got and hmac.compare_digest(got, expected_pin.lower())):
        raise IdentityError(f"{where}: server key SHA-256 {got} does not match the policy's "
                            f"pin {expected_pin}", expected_pin, got)
    return got


def make_ssl_context(ca_pem: str | None, pin: str | None, client_cert: str | None,
                     client_key: str | None) -> ssl.SSLContext:
    """TLS client context: the destination's CA if given, else (with a pin) the pin alone,
    else the system CAs. Client certificate when configured. TLS 1.2 at least."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_pem:
        ctx.load_verify_locations(cadata=ca_pem)
    elif pin:
        # The pin is the identity: any chain is acceptable, the key must match exactly.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_default_certs()
    if client_cert:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


class Waker:
    """A wake-up another thread can set and a select() loop can wait on with a socket.

    The sender selects on its broker socket *and* this, so new work or a stop request
    wakes it at once instead of after a poll timeout.
    """

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        return self._r.fileno()

    def set(self) -> None:
        try:
            self._w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already pending (buffer full) or closing: a wake-up is on its way anyway

    def clear(self) -> None:
        try:
            while self._r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def wait(self, timeout: float) -> None:
        try:
            select.select([self._r], [], [], max(0.0, timeout))
        except (ValueError, OSError):
            time.sleep(max(0.0, timeout))
        self.clear()

    def close(self) -> None:
        self._r.close()
        self._w.close()


@dataclass
class Ack:
    mid: int
    ok: bool
    reason_code: int
    reason: str


class MqttLink:
    """One destination's connection (see module docstring). Single-threaded use."""

    def __init__(self, destination_id: str, transport: Transport,
                 credentials: DestinationCredentials | None = None, keepalive: int = 30,
                 connect_timeout: float = 10.0) -> None:
        self.destination_id = destination_id
        self.transport = transport
        self.credentials = credentials or DestinationCredentials()
        self.topic = validate_topic(transport.topic)
        self._topic16 = mqtt_string(self.topic)
        self.tls, self.host, self.port = egress_endpoint(transport.broker_url,
                                                         f"destination {destination_id}")
        if not self.tls and (transport.server_key_sha256 or transport.ca_pem):
            raise ValueError(f"destination {destination_id}: broker_url {transport.broker_url!r} "
                             "is not mqtts:// but the policy gives a CA or key pin to check")
        self.protocol = PROTOCOLS[self.credentials.protocol]
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.client_id = self.credentials.client_id or \
            f"plategate-{socket.gethostname()}-{destination_id}"
        self.client: PinnedClient | None = None
        self.connected = False
        self.peer_pin: str | None = None
        self.acks: deque[Ack] = deque()
        self.receive_maximum = 65535          # from CONNACK (MQTT 5); see _on_connect
        self._connack: tuple[bool, str] | None = None
        self._lost: str | None = None

    # paho callbacks: append only, never block or raise
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack = (not reason_code.is_failure, str(reason_code))
        # MQTT 5: the broker's Receive Maximum bounds our QoS 1 messages in flight (more
        # is a protocol error a strict broker disconnects for); absent means 65535.
        limit = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        self.receive_maximum = int(limit) if isinstance(limit, int) and limit > 0 else 65535

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._lost = str(reason_code)

    def _on_fast_ack(self, mid: int, code: int = 0, reason: str = "Success") -> None:
        self.acks.append(Ack(mid, code < 0x80, code, reason))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        code = getattr(reason_code, "value", 0)
        self.acks.append(Ack(mid, code < 0x80, code, str(reason_code)))

    def _new_client(self) -> PinnedClient:
        creds = self.credentials
        kwargs = {"client_id": self.client_id, "protocol": self.protocol}
        if self.protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = False      # persistent session (3.1.1)
        client = PinnedClient(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        client.buffered_io = True
        client.fast_ack = self._on_fast_ack
        client.on_socket = pin_checker(self.transport.server_key_sha256)
        client.enable_logger(paho_logger())
        # The sender bounds what is in flight itself (its window); paho's own limit would make
        # it walk every queued message on each PUBACK.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.connect_timeout = self.connect_timeout
        if creds.username:
            client.username_pw_set(creds.username, creds.password)
        if self.tls:
            client.tls_set_context(make_ssl_context(self.transport.ca_pem,
                                                    self.transport.server_key_sha256,
                                                    creds.client_cert, creds.client_key))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def connect(self) -> None:
        """Open a verified connection or raise LinkError / IdentityError saying why not."""
        self.close()
        self._connack, self._lost = None, None
        self.acks.clear()
        client = self._new_client()
        self.client = client
        props = None
        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
        where = f"{self.destination_id} at {self.transport.broker_url}"
        try:
            if self.protocol == mqtt.MQTTv5:
                client.connect(self.host, self.port, self.keepalive, clean_start=False,
                               properties=props)
            else:
                client.connect(self.host, self.port, self.keepalive)
        except IdentityError as exc:
            self.client = None
            raise IdentityError(f"destination {where}: server key SHA-256 {exc.got} does not "
                                f"match the policy's pin {exc.expected}", exc.expected,
                                exc.got) from None
        except ssl.SSLCertVerificationError as exc:
            self.client = None
            raise IdentityError(f"destination {where}: server certificate not accepted "
                                f"({exc.verify_message})", self.transport.server_key_sha256,
                                None) from exc
        except (OSError, ValueError) as exc:
            self.client = None
            raise LinkError(f"cannot connect to destination {where}: {exc}") from exc
        deadline = time.monotonic() + self.connect_timeout
        while self._connack is None and self._lost is None and time.monotonic() < deadline:
            self._pump(0.05, None)
        if self._connack is None or not self._connack[0]:
            why = self._connack[1] if self._connack else (self._lost or "no CONNACK in time")
            self.close()
            raise LinkError(f"destination {where} refused the connection: {why}")
        self._verify_live_socket(where)
        self.connected = True
        log.log(logging.INFO if self.tls else logging.WARNING,
                "link connected dest=%s broker=%s protocol=%s pin_checked=%s%s",
                self.destination_id, self.transport.broker_url, self.credentials.protocol,
                bool(self.transport.server_key_sha256),
                "" if self.tls else " (plain MQTT to loopback, allowed by the device config)")

    def _verify_live_socket(self, where: str) -> None:
        """Second pin check, on the socket CONNACK came over, before the first publish."""
        if not self.tls:
            return
        sock = self.client.socket() if self.client else None
        try:
            self.peer_pin = verify_peer_pin(sock, self.transport.server_key_sha256,
                                            f"destination {where}")
        except IdentityError:
            self.close()
            raise

    def publish(self, message: Sendable) -> int:
        """Queue one message the egress gate sealed on the live connection; returns its mid
        (ack via `acks`). Nothing else can be published: `message` must be a Sendable, for
        this link's topic, and everything the broker sees besides the payload (expiry, user
        properties, QoS, retain) comes from its view."""
        if type(message) is not Sendable:
            raise TypeError("MqttLink.publish() takes only a Sendable from the egress gate")
        view = message.view
        if view.topic != self.topic or view.qos != 1 or view.retain:
            raise LinkError(f"destination {self.destination_id}: message is for topic "
                            f"{view.topic!r} qos={view.qos} retain={view.retain}, not this link's")
        if not self.connected or self.client is None:
            raise LinkError(f"destination {self.destination_id}: not connected")
        payload = message.message
        props = b""
        if self.protocol == mqtt.MQTTv5:
            props = publish_properties(view.expiry_s, view.purpose, view.policy_version,
                                        message.delivery.read_id)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise LinkError(f"destination {self.destination_id}: message of {len(payload)} "
                            f"bytes is larger than MQTT allows")
        try:
            mid = self.client.publish_qos1(self._topic16, payload, props)
        except OSError as exc:
            self._lost = self._lost or f"send failed: {exc}"
            raise LinkError(f"destination {self.destination_id}: publish failed: {exc}") from exc
        if mid is None:
            self._lost = self._lost or "connection lost"
            raise LinkError(f"destination {self.destination_id}: not connected")
        return mid

    def begin_batch(self) -> None:
        """Publishes until end_batch() are written to the socket together."""
        if self.client is not None:
            self.client.begin_batch()

    def discard_batch(self) -> list[int]:
        """Withdraw the messages published since begin_batch() (nothing of them was sent);
        returns their mids. For a sender whose policy changed while it framed the batch."""
        return self.client.discard_batch() if self.client is not None else []

    def end_batch(self) -> None:
        if self.client is None:
            return
        try:
            self.client.end_batch()
        except OSError as exc:
            self._lost = self._lost or f"send failed: {exc}"

    def poll(self, timeout: float, waker: Waker | None = None) -> None:
        """Wait up to `timeout` for the socket (or `waker`), then read PUBACKs, write what is
        queued and keep the connection alive. Callbacks run here, on the caller's thread."""
        if self.client is None:
            return
        self._pump(timeout, waker)
        if self._lost is not None and self.connected:
            self.connected = False
            log.warning("link lost dest=%s broker=%s reason=%s", self.destination_id,
                        self.transport.broker_url, self._lost)

    def _pump(self, timeout: float, waker: Waker | None) -> None:
        # paho's external-event-loop API (socket/want_write/loop_read/loop_write/loop_misc):
        # unlike loop(), it lets the sender also wait on its own waker.
        client = self.client
        sock = client.socket() if client else None
        if sock is None:
            self._lost = self._lost or "socket closed"
            return
        rlist: list = [sock] + ([waker] if waker is not None else [])
        wlist = [sock] if client.want_write() or client.pending_write() else []
        tls_pending = getattr(sock, "pending", None)

        def buffered() -> bool:
            return client.pending_read() > 0 or (tls_pending is not None and tls_pending() > 0)

        if buffered():
            timeout = 0.0
        try:
            readable, writable, _ = select.select(rlist, wlist, [], max(0.0, timeout))
        except (ValueError, OSError) as exc:
            self._lost = self._lost or f"select failed: {exc}"
            return
        rc = mqtt.MQTT_ERR_SUCCESS
        if sock in readable or buffered():
            healthy = client.pending_read() > 0 or client.fill_read()
            client.read_pubacks()
            if healthy and not buffered():
                rc = mqtt.MQTT_ERR_SUCCESS      # every byte read was a PUBACK
            else:
                rc = client.loop_read()
            # paho reads one packet per loop_read() when it tracks no messages itself (it
            # sizes the round by its own queues, and publish_qos1 messages are not in
            # them): read on while whole packets wait in the buffer, so a burst of PUBACKs
            # is handled in one round instead of one per select().
            rounds = 0
            while rc == mqtt.MQTT_ERR_SUCCESS and client.pending_read() > 0 and rounds < 4096:
                if client.read_pubacks() and not client.pending_read():
                    break
                rc = client.loop_read()
                rounds += 1
        if rc == mqtt.MQTT_ERR_SUCCESS and writable:
            try:
                client.flush_writes()
            except OSError as exc:
                self._lost = self._lost or f"send failed: {exc}"
                return
        if rc == mqtt.MQTT_ERR_SUCCESS and (writable or client.want_write()):
            rc = client.loop_write()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        if waker is not None and waker in readable:
            waker.clear()
        if rc != mqtt.MQTT_ERR_SUCCESS and self._lost is None:
            self._lost = mqtt.error_string(rc)

    @property
    def lost(self) -> str | None:
        return self._lost

    def close(self, timeout: float = 2.0) -> None:
        """Clean MQTT DISCONNECT (when connected) and close the socket."""
        client, self.client = self.client, None
        was_connected, self.connected = self.connected, False
        if client is None:
            return
        try:
            if was_connected:
                client.disconnect()
                deadline = time.monotonic() + timeout
                while client.is_connected() and time.monotonic() < deadline:
                    self.client = client
                    self._pump(0.05, None)
                    self.client = None
        except Exception:  # closing must not fail the sender
            log.debug("link close error dest=%s", self.destination_id, exc_info=True)
        finally:
            try:
                client.force_close()  # the socket, whatever state paho is in
            except Exception:
                pass
