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

import functools
import hashlib
import hmac
import logging
import random
import select
import socket
import ssl
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.delivery.gate import Sendable
from agent.policy.decision import Transport, validate_topic  # validate_topic: status.py too

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


class Backoff:
    """Jittered exponential backoff ("full jitter"): delay = random(0, min(cap, base*2^n))."""

    def __init__(self, base: float = 0.5, cap: float = 60.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return max(0.05, self._rng.uniform(ceiling / 2, ceiling))

    def reset(self) -> None:
        self.attempt = 0


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


class _PinnedClient(mqtt.Client):
    """paho client that checks the server key pin right after the TLS handshake.

    paho has no public hook between the handshake and CONNECT, so this overrides its
    socket factory; `MqttLink` checks the pin again on the live socket after CONNACK
    in case a paho release stops calling it.

    With `buffered_io` (the delivery links) it also coalesces socket I/O: reads fill a
    64 KiB buffer that paho's small reads (1 byte, then the length, then the body) are
    served from, and writes made between begin_batch() and end_batch() go out in one
    send. Each syscall is a point where a thread gives up the GIL and queues to get it
    back behind the other stages, so three syscalls per PUBACK and one per PUBLISH were
    what limited throughput, not the syscalls themselves.
    """

    expected_pin: str | None = None
    peer_pin: str | None = None
    identity_failures = 0
    buffered_io = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        self._batching = False
        self._fast_mids: set[int] = set()   # QoS 1 PUBLISHes framed by publish_qos1()
        self._batch_start = 0                 # write-buffer length when the batch began
        self._batch_mids: list[int] = []      # messages framed since begin_batch()

    def _create_socket(self):  # noqa: D401 - paho internal hook
        sock = super()._create_socket()
        self._rbuf.clear()
        self._wbuf.clear()
        self._fast_mids.clear()
        if isinstance(sock, ssl.SSLSocket):
            der = sock.getpeercert(binary_form=True)
            self.peer_pin = spki_sha256_of_der_cert(der) if der else None
            if self.expected_pin and not (self.peer_pin and hmac.compare_digest(
                    self.peer_pin, self.expected_pin.lower())):
                sock.close()
                self.identity_failures += 1
                raise IdentityError("server key pin mismatch", self.expected_pin, self.peer_pin)
        return sock

    # --- coalesced I/O (paho internal hooks; only with buffered_io) ------------------------

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self.buffered_io:
            return super()._sock_recv(bufsize)
        if not self._rbuf:
            data = super()._sock_recv(65536)
            if not data:
                return data          # EOF: paho treats it as a lost connection
            self._rbuf += data
        chunk = bytes(self._rbuf[:bufsize])
        del self._rbuf[:bufsize]
        return chunk

    def _sock_send(self, buf) -> int:
        if not self.buffered_io:
            return super()._sock_send(buf)
        if self._batching or (self._wbuf and not self.flush_writes()):
            self._wbuf += buf
            return len(buf)
        return super()._sock_send(buf)

    def begin_batch(self) -> None:
        self._batching = self.buffered_io
        self._batch_start = len(self._wbuf)
        self._batch_mids = []

    def discard_batch(self) -> list[int]:
        """Take back every message framed since begin_batch(): none of it has reached the
        socket (a batch is written only by end_batch()). Returns their packet ids."""
        if not self._batching:
            return []
        del self._wbuf[self._batch_start:]
        mids, self._batch_mids = self._batch_mids, []
        self._fast_mids.difference_update(mids)
        return mids

    def end_batch(self) -> None:
        self._batching = False
        self.flush_writes()

    def flush_writes(self) -> bool:
        """Send what was coalesced; True when nothing is left (False: socket buffer full)."""
        wrote = False
        try:
            while self._wbuf:
                try:
                    sent = super()._sock_send(self._wbuf)
                except BlockingIOError:
                    return False
                del self._wbuf[:sent]
                wrote = True
            return True
        finally:
            if wrote:   # paho's keepalive: a PINGREQ is due only after keepalive idle seconds
                with self._msgtime_mutex:
                    self._last_msg_out = mqtt.time_func()

    def publish_qos1(self, topic16: bytes, payload: bytes, packed_properties: bytes) -> int | None:
        """Frame one QoS 1 PUBLISH (MQTT 5.0 s. 3.3 / 3.1.1 s. 3.3) onto the coalesced write
        buffer; returns its packet id, or None when there is no socket.

        paho's publish() builds a message object, a message-info object with its own
        threading.Condition, a queued-packet dict and a debug log call per message, which
        was about half of the CPU of sending. Messages framed here are not kept by paho:
        each connection is a fresh client and the outbox re-sends what was not
        acknowledged, so paho's own retry queue is never needed. Their PUBACKs come back
        through `fast_ack` (see _handle_pubackcomp). `topic16` is the topic as an MQTT
        string (length-prefixed), `packed_properties` b"" for MQTT 3.1.1.
        """
        if self._sock is None:
            return None
        mid = self._mid_generate()
        self._fast_mids.add(mid)
        remaining = len(topic16) + 2 + len(packed_properties) + len(payload)
        self._wbuf += b"\x32" + _varint(remaining) + topic16 + mid.to_bytes(2, "big") \
            + packed_properties + payload
        if self._batching:
            self._batch_mids.append(mid)
        else:
            self.flush_writes()
        return mid

    def pending_read(self) -> int:
        return len(self._rbuf)

    def fill_read(self) -> bool:
        """One non-blocking recv into the read buffer. False when the socket reported EOF or
        an error: paho's loop_read() must then run to see it for itself."""
        try:
            data = super()._sock_recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except OSError:
            return False
        if not data:
            return False
        self._rbuf += data
        return True

    def read_pubacks(self) -> int:
        """Handle the success PUBACKs of publish_qos1() messages at the front of the read
        buffer without paho (three reads and a dispatch per packet there); stop at the
        first other packet, which loop_read() then handles. Returns how many."""
        if self.fast_ack is None or self._in_packet["command"] != 0:
            return 0          # paho is in the middle of a packet: let it finish
        buf, mids, ack = self._rbuf, self._fast_mids, self.fast_ack
        end, pos, count = len(buf), 0, 0
        while pos + 4 <= end and buf[pos] == 0x40:
            size = buf[pos + 1]
            if size == 3:       # with a reason code: only success codes (< 0x80) here
                if pos + 5 > end or buf[pos + 4] >= 0x80:
                    break
            elif size != 2:
                break
            mid = (buf[pos + 2] << 8) | buf[pos + 3]
            if mid not in mids:
                break
            mids.discard(mid)
            ack(mid)
            pos += 2 + size
            count += 1
        if pos:
            del buf[:pos]
            with self._msgtime_mutex:
                self._last_msg_in = mqtt.time_func()
        return count

    # A success PUBACK (MQTT 5 without properties, or 3.1.1) is the common case,
    # and paho builds two ReasonCode and two Properties objects to decode each one. With
    # `fast_ack` set, such PUBACKs go straight to it; everything else takes paho's path.
    fast_ack = None

    def _handle_pubackcomp(self, cmd):  # noqa: D401 - paho internal hook
        packet = self._in_packet["packet"]
        if self.fast_ack is not None and cmd == "PUBACK" and len(packet) >= 2:
            mid = (packet[0] << 8) | packet[1]
            if mid in self._fast_mids:
                # A message framed by publish_qos1(): paho does not know it, so its PUBACK,
                # success or failure, is decoded here (failures and properties by paho's
                # decoder) and handed to fast_ack.
                self._fast_mids.discard(mid)
                if len(packet) == 2 or (len(packet) == 3 and packet[2] < 0x80):
                    self.fast_ack(mid)
                else:
                    result = _packet.decode_puback(self._in_packet["command"], packet,
                                                   self._protocol)
                    self.fast_ack(mid, result.reason.value, str(result.reason))
                return mqtt.MQTT_ERR_SUCCESS
        # 2 bytes: mid only (success); 3 bytes: mid + a success reason code such as 0x10
        # "no matching subscribers"; anything else (failures, properties) goes to paho.
        if self.fast_ack is None or cmd != "PUBACK" or not (
                len(packet) == 2 or (len(packet) == 3 and packet[2] < 0x80)):
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            msg = self._out_messages.pop(mid, None)
            if msg is None:
                return mqtt.MQTT_ERR_SUCCESS
            msg.info._set_as_published()
            if msg.qos > 0:
                self._inflight_messages -= 1
        self.fast_ack(mid)
        return mqtt.MQTT_ERR_SUCCESS

    def pending_write(self) -> int:
        return len(self._wbuf)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 65535:
        raise ValueError(f"MQTT string of {len(data)} bytes is longer than 65535")
    return struct.pack("!H", len(data)) + data


@functools.lru_cache(maxsize=64)
def _utf8_cached(text: str) -> bytes:
    return _utf8(text)


def pack_publish_properties(expiry_s: int | None, user_properties,
                            content_type: str = "application/json") -> bytes:
    """The PUBLISH properties block (length included) the delivery stage sends: payload
    format indicator (1), message expiry interval (2), content type (3), user properties (38)."""
    body = b"\x01\x01"
    if expiry_s is not None:
        body += b"\x02" + struct.pack("!L", expiry_s)
    body += b"\x03" + _utf8_cached(content_type)
    for key, value in user_properties:
        body += b"\x26" + _utf8_cached(key) + _utf8(value)
    return _varint(len(body)) + body


_FORMAT_AND_TYPE = b"\x01\x01"
_CONTENT_TYPE = b"\x03" + _utf8("application/json")
_READ_ID_KEY = b"\x26" + _utf8("read_id")


@functools.lru_cache(maxsize=64)
def _purpose_and_version(purpose: str, policy_version: int) -> bytes:
    return (b"\x26" + _utf8("purpose") + _utf8(purpose) + b"\x26" + _utf8("policy_version")
            + _utf8(str(policy_version)))


def _publish_properties(expiry_s: int | None, purpose: str, policy_version: int,
                        read_id: str) -> bytes:
    """pack_publish_properties(expiry_s, [("purpose", …), ("policy_version", …), ("read_id",
    …)]) byte for byte, with the parts shared by many messages encoded once (per message)."""
    body = (_FORMAT_AND_TYPE + (b"" if expiry_s is None else b"\x02" + struct.pack("!L", expiry_s))
            + _CONTENT_TYPE + _purpose_and_version(purpose, policy_version)
            + _READ_ID_KEY + _utf8(read_id))
    return _varint(len(body)) + body


class PublishProperties(Properties):
    """MQTT 5 PUBLISH properties encoded once, up front.

    paho's generic Properties spends more CPU per message than the rest of the send path
    together (name lookups on every attribute); the delivery stage sends the same four
    properties on every message, so they are encoded here directly (MQTT 5.0 s. 3.3.2.3):
    payload format indicator (1), message expiry interval (2), content type (3), and user
    properties (38).
    """

    def __init__(self, expiry_s: int | None, user_properties: list[tuple[str, str]],
                 content_type: str = "application/json") -> None:
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", pack_publish_properties(expiry_s, user_properties,
                                                                    content_type))
        object.__setattr__(self, "_user_properties", list(user_properties))
        object.__setattr__(self, "_expiry", expiry_s)

    def pack(self) -> bytes:
        return self._packed

    def __getattr__(self, name: str):
        if name == "UserProperty":
            return self._user_properties
        if name == "MessageExpiryInterval" and self._expiry is not None:
            return self._expiry
        raise AttributeError(name)


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
        self._topic16 = _utf8(self.topic)
        self.tls, self.host, self.port = parse_broker_url(transport.broker_url)
        if not self.tls and (transport.server_key_sha256 or transport.ca_pem):
            raise ValueError(f"destination {destination_id}: broker_url {transport.broker_url!r} "
                             "is not mqtts:// but the policy gives a CA or key pin to check")
        self.protocol = PROTOCOLS[self.credentials.protocol]
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.client_id = self.credentials.client_id or \
            f"plategate-{socket.gethostname()}-{destination_id}"
        self.client: _PinnedClient | None = None
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

    def _new_client(self) -> _PinnedClient:
        creds = self.credentials
        kwargs = {"client_id": self.client_id, "protocol": self.protocol}
        if self.protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = False      # persistent session (3.1.1)
        client = _PinnedClient(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        client.buffered_io = True
        client.fast_ack = self._on_fast_ack
        client.expected_pin = self.transport.server_key_sha256
        client.enable_logger(logging.getLogger("paho.mqtt.client"))
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
        log.info("link connected dest=%s broker=%s protocol=%s pin_checked=%s",
                 self.destination_id, self.transport.broker_url, self.credentials.protocol,
                 bool(self.transport.server_key_sha256))

    def _verify_live_socket(self, where: str) -> None:
        """Second pin check, on the socket CONNACK came over, before the first publish."""
        if not self.tls:
            return
        sock = self.client.socket() if self.client else None
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        self.peer_pin = spki_sha256_of_der_cert(der) if der else None
        expected = self.transport.server_key_sha256
        if expected and not (self.peer_pin and hmac.compare_digest(self.peer_pin,
                                                                    expected.lower())):
            self.close()
            raise IdentityError(f"destination {where}: server key SHA-256 {self.peer_pin} does "
                                f"not match the policy's pin {expected}", expected, self.peer_pin)

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
            props = _publish_properties(view.expiry_s, view.purpose, view.policy_version,
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
                client._sock_close()  # the socket, whatever state paho is in
            except Exception:
                pass
