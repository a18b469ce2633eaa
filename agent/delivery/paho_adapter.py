"""Every use of paho-mqtt's private internals, in one module, for speed and one hook.

The delivery links drive paho through its public external-event-loop API (socket,
want_write, loop_read, loop_write, loop_misc); this module is the only place that reaches
inside it (STYLE.md: "where speed forces you inside, keep every private name in one adapter
module, pin the version, and test byte by byte"):

- `_create_socket`: the one point between the TLS handshake and CONNECT, where a link
  checks the server key pin before any credential is sent;
- `_sock_recv` / `_sock_send` and the read/write buffers: coalesced socket I/O;
- a QoS 1 PUBLISH framer (`publish_qos1`) and a PUBACK parser (`read_pubacks`,
  `parse_puback`, `_handle_pubackcomp`) that bypass paho's per-message objects;
- the keepalive clock (`_last_msg_out`: paho 2.2 keeps no clock of what came in), the
  packet-id generator and the
  in-flight bookkeeping of messages paho does know.

`PAHO_VERSION` is the paho release these were written and tested against; setup.cfg pins
it, and `PRIVATE_NAMES` lists every private name used here: tests/test_paho_adapter.py
checks that each exists in the installed paho, so an upgrade that removes one fails a test
instead of a delivery. The framing and parsing are tested byte by byte against a fake
broker there too (split packets, failure reason codes, PUBACK with properties, PINGRESP
between PUBACKs).
"""
from __future__ import annotations

import functools
import socket
import ssl
import struct
from collections.abc import Callable

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

PAHO_VERSION = "2.2.0"
# Every private paho name this module touches (attributes of mqtt.Client instances or of
# the class); the adapter test checks each against the installed paho.
PRIVATE_NAMES = (
    "_create_socket", "_sock_recv", "_sock_send", "_sock_close", "_handle_pubackcomp",
    "_sock", "_in_packet", "_msgtime_mutex", "_last_msg_out",
    "_mid_generate", "_out_message_mutex", "_out_messages", "_inflight_messages",
)


def paho_version_ok() -> bool:
    """Whether the installed paho is the release this adapter was tested against."""
    return paho.mqtt.__version__ == PAHO_VERSION


def parse_puback(packet: bytes) -> tuple[int, int, str]:
    """(mid, reason code, reason name) of a PUBACK's variable header and properties
    (MQTT 5.0 s. 3.4; 3.1.1: packet id only, success). Properties, if any, are skipped;
    ValueError on a packet too short to hold a packet id."""
    if len(packet) < 2:
        raise ValueError(f"PUBACK of {len(packet)} bytes has no packet id")
    mid = (packet[0] << 8) | packet[1]
    code = packet[2] if len(packet) > 2 else 0
    return mid, code, puback_reason(code)


@functools.lru_cache(maxsize=256)
def puback_reason(code: int) -> str:
    """The MQTT 5 name of a PUBACK reason code (paho's table), computed once per code: a
    broker sends 0x10 "No matching subscribers" on every PUBACK of a topic nobody reads."""
    try:
        return str(ReasonCode(PacketTypes.PUBACK, identifier=code))
    except (ValueError, KeyError):
        return f"reason code 0x{code:02x}"


class PinnedClient(mqtt.Client):
    """paho client with a hook right after the (TLS) socket is made, before CONNECT.

    paho has no public hook between the handshake and CONNECT, so this overrides its
    socket factory and calls `on_socket(sock)`, which may raise to refuse the server (the
    links check the server key pin there, and again on the live socket after CONNACK in
    case a paho release stops calling this hook).

    With `buffered_io` (the delivery links) it also coalesces socket I/O: reads fill a
    64 KiB buffer that paho's small reads (1 byte, then the length, then the body) are
    served from, and writes made between begin_batch() and end_batch() go out in one
    send. Each syscall is a point where a thread gives up the GIL and queues to get it
    back behind the other stages, so three syscalls per PUBACK and one per PUBLISH were
    what limited throughput, not the syscalls themselves.
    """

    on_socket: Callable[[socket.socket], None] | None = None
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
        if self.on_socket is not None:
            try:
                self.on_socket(sock)
            except BaseException:
                sock.close()
                raise
        return sock

    def force_close(self) -> None:
        """Close the socket, whatever state paho is in."""
        self._sock_close()

    def socket_attached(self) -> bool:
        return self._sock is not None

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
        self._wbuf += b"\x32" + varint(remaining) + topic16 + mid.to_bytes(2, "big") \
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
            if size == 2 or buf[pos + 4] == 0:
                ack(mid)
            else:               # a success code with news, e.g. 0x10 no matching subscribers
                ack(*parse_puback(bytes(buf[pos + 2:pos + 5])))
            pos += 2 + size
            count += 1
        if pos:
            del buf[:pos]
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
                # success or failure, is decoded here and handed to fast_ack.
                self._fast_mids.discard(mid)
                if len(packet) == 2 or packet[2] == 0:
                    self.fast_ack(mid)
                else:
                    _mid, code, reason = parse_puback(bytes(packet))
                    self.fast_ack(mid, code, reason)
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


def varint(value: int) -> bytes:
    """MQTT variable byte integer (MQTT 5.0 s. 1.5.5)."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def mqtt_string(text: str) -> bytes:
    """MQTT UTF-8 string: two-byte length, then the bytes (MQTT 5.0 s. 1.5.4)."""
    data = text.encode("utf-8")
    if len(data) > 65535:
        raise ValueError(f"MQTT string of {len(data)} bytes is longer than 65535")
    return struct.pack("!H", len(data)) + data


@functools.lru_cache(maxsize=64)
def _string_cached(text: str) -> bytes:
    return mqtt_string(text)


_FORMAT_AND_TYPE = b"\x01\x01"
_CONTENT_TYPE = b"\x03" + mqtt_string("application/json")
_READ_ID_KEY = b"\x26" + mqtt_string("read_id")


@functools.lru_cache(maxsize=64)
def _purpose_and_version(purpose: str, policy_version: int) -> bytes:
    return (b"\x26" + mqtt_string("purpose") + mqtt_string(purpose) + b"\x26" + mqtt_string("policy_version")
            + mqtt_string(str(policy_version)))


def publish_properties(expiry_s: int | None, purpose: str, policy_version: int,
                        read_id: str) -> bytes:
    """The PUBLISH properties block (length included) a read message carries: payload format
    indicator (1), message expiry interval (2), content type (3), user properties (38)
    purpose, policy_version and read_id; encoded here directly (MQTT 5.0 s. 3.3.2.3),
    since paho's generic Properties cost more CPU per message than the rest of the send
    path, with the parts shared by many messages encoded once."""
    body = (_FORMAT_AND_TYPE + (b"" if expiry_s is None else b"\x02" + struct.pack("!L", expiry_s))
            + _CONTENT_TYPE + _purpose_and_version(purpose, policy_version)
            + _READ_ID_KEY + mqtt_string(read_id))
    return varint(len(body)) + body
