"""The paho adapter: its version pin, every private name it touches, and its framing and
PUBACK parsing byte by byte against a fake broker (as paho's own suite tests its client).

The fake broker is a plain TCP socket speaking MQTT bytes written out here, so each case
(split packets, failure reason codes, PUBACK with properties, PINGRESP between PUBACKs)
reaches the link exactly as written.
"""
from __future__ import annotations

import configparser
import socket
import threading
import time
from pathlib import Path

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest

from agent.delivery import paho_adapter
from agent.delivery.mqtt_link import DestinationCredentials, MqttLink
from agent.delivery.paho_adapter import (PinnedClient, mqtt_string, parse_puback,
                                         publish_properties, varint)
from helpers.soak import destination_doc, make_read, policy_doc

ROOT = Path(__file__).resolve().parents[1]


# --- the pin ------------------------------------------------------------------------------

def test_installed_paho_is_the_pinned_release():
    assert paho.mqtt.__version__ == paho_adapter.PAHO_VERSION
    assert paho_adapter.paho_version_ok()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requires = cfg["options"]["install_requires"]
    assert f"paho-mqtt=={paho_adapter.PAHO_VERSION}" in requires.replace(" ", "")


@pytest.mark.parametrize("name", paho_adapter.PRIVATE_NAMES)
def test_every_private_name_the_adapter_uses_exists_in_paho(name):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    assert hasattr(client, name), f"paho {paho.mqtt.__version__} has no {name}"


def test_the_adapter_is_the_only_module_inside_paho():
    """Acceptance: the private-API grep of issue 15 matches in one module only."""
    import re
    pattern = re.compile(r"paho.mqtt._|\._sock|_out_messages|_handle_pubackcomp")
    hits = {path.relative_to(ROOT).as_posix() for path in (ROOT / "agent").rglob("*.py")
            if pattern.search(path.read_text())}
    assert hits == {"agent/delivery/paho_adapter.py"}
    source = (ROOT / "agent" / "delivery" / "paho_adapter.py").read_text()
    used = set(re.findall(r"(?:self|client|super\(\))\.(_[a-z][a-z_]*)", source))
    own = {"_rbuf", "_wbuf", "_batching", "_fast_mids", "_batch_start", "_batch_mids"}
    assert used - own <= set(paho_adapter.PRIVATE_NAMES), sorted(used - own)


# --- pure framing ---------------------------------------------------------------------------

def test_publish_properties_match_paho():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    ref = Properties(PacketTypes.PUBLISH)
    ref.PayloadFormatIndicator = 1
    ref.MessageExpiryInterval = 3600
    ref.ContentType = "application/json"
    ref.UserProperty = [("purpose", "stolen_vehicle"), ("policy_version", "3"), ("read_id", "r1")]
    assert publish_properties(3600, "stolen_vehicle", 3, "r1") == ref.pack()


def test_framed_publish_matches_paho_packet():
    """publish_qos1 frames PUBLISH itself; the bytes must be what paho would have sent."""
    for protocol, props in ((mqtt.MQTTv5, publish_properties(60, "p", 1, "r1")),
                            (mqtt.MQTTv311, b"")):
        ours = PinnedClient(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
        ours.buffered_io = True
        ours._sock = object()               # "connected": frames go to the write buffer
        ours.begin_batch()
        payload = b"x" * 300                # a two-byte remaining length
        mid = ours.publish_qos1(mqtt_string("pg/city/reads"), payload, props)
        theirs = PinnedClient(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
        theirs._sock = object()
        theirs._packet_queue = lambda command, packet, mid, qos, info=None: \
            setattr(theirs, "framed", bytes(packet)) or mqtt.MQTT_ERR_SUCCESS
        theirs._send_publish(mid, b"pg/city/reads", payload, 1, False, False, None,
                             type("P", (), {"pack": lambda self: props})() if props else None)
        assert bytes(ours._wbuf) == theirs.framed
        ours._sock = theirs._sock = None


@pytest.mark.parametrize("value, encoded", [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"),
                                            (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"),
                                            (268435455, b"\xff\xff\xff\x7f")])
def test_varint(value, encoded):
    assert varint(value) == encoded


@pytest.mark.parametrize("packet, expected", [
    (b"\x12\x34", (0x1234, 0, "Success")),                                  # 3.1.1 / v5 short
    (b"\x00\x07\x10", (7, 0x10, "No matching subscribers")),
    (b"\x00\x07\x87", (7, 0x87, "Not authorized")),
    (b"\x00\x07\x00\x05\x1f\x00\x02ok", (7, 0, "Success")),                 # with properties
    (b"\x00\x07\x97\x05\x1f\x00\x02no", (7, 0x97, "Quota exceeded")),
    (b"\x00\x07\xfe", (7, 0xFE, "reason code 0xfe")),                       # not in MQTT 5
])
def test_parse_puback(packet, expected):
    assert parse_puback(packet) == expected


def test_parse_puback_refuses_a_packet_without_an_id():
    with pytest.raises(ValueError):
        parse_puback(b"\x01")


# --- against a fake broker ------------------------------------------------------------------

def _read_packet(conn: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data
    first = exactly(1)[0]
    length, shift = 0, 0
    while True:
        byte = exactly(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, exactly(length)


class FakeBroker:
    """Accepts one client, answers CONNECT, reads `expect` PUBLISHes, then sends `reply(mids)`
    in the given chunk sizes, each chunk its own send (so the client reads split packets)."""

    def __init__(self, expect: int, reply, chunks: tuple[int, ...], v5: bool = True) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.expect, self.reply, self.chunks, self.v5 = expect, reply, chunks, v5
        self.published: list[tuple[int, bytes]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.server.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                command, _body = _read_packet(conn)
                assert command == 0x10, hex(command)
                conn.sendall(b"\x20\x03\x00\x00\x00" if self.v5 else b"\x20\x02\x00\x00")
                mids = []
                while len(mids) < self.expect:
                    command, body = _read_packet(conn)
                    if command & 0xF0 != 0x30:
                        continue                              # e.g. PINGREQ
                    topic_len = int.from_bytes(body[:2], "big")
                    mids.append(int.from_bytes(body[2 + topic_len:4 + topic_len], "big"))
                    self.published.append((command, body))
                data = self.reply(mids)
                pos = 0
                for size in self.chunks * (len(data) // max(1, sum(self.chunks)) + 1):
                    if pos >= len(data):
                        break
                    conn.sendall(data[pos:pos + size])
                    pos += size
                    time.sleep(0.002)                     # let each chunk arrive on its own
                while conn.recv(4096):                    # until the client disconnects
                    pass
        except BaseException as exc:   # reported by the test
            self.error = exc
        finally:
            self.server.close()


class _Policies:
    """A policy source holding one parsed (not installed) policy: the fake broker speaks
    plain MQTT on loopback, which an installed policy may name only with a device opt-in."""

    def __init__(self, policy) -> None:
        self.policy = policy

    def active(self, now: float):
        return self.policy


def _sendables(url: str, count: int):
    """Sendables from a real egress gate, for `count` reads decided by the policy stage."""
    from agent.delivery.gate import EgressGate
    from agent.delivery.records import Delivery
    from agent.policy.decision import decide_read
    from agent.policy.schema import policy_from_dict
    now = time.time()
    policy = policy_from_dict(policy_doc(1, [destination_doc("fake", url, "pg/fake")], now),
                              signer_key_id="k" * 16, digest="d" * 64)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.provenance.messages import UnitSigner
    gate = EgressGate(_Policies(policy), audit=None,
                      signer=UnitSigner("unit-test", Ed25519PrivateKey.generate()))
    transport = policy.destination("fake").transport
    messages = []
    for i in range(count):
        decided = decide_read(make_read(i, now), policy, None, {}, now)
        (plan,) = decided.allowed
        delivery = Delivery(i + 1, "fake", decided.read.read_id, policy.digest, policy.version,
                            plan.transport_digest, plan.purpose, plan.payload, decided.read, now)
        message, decision, _queued = gate.release(delivery, now, transport)
        assert decision.allowed, decision
        messages.append(message)
    return transport, messages


def _acks_over(reply, chunks, count, protocol="5"):
    broker = FakeBroker(count, reply, chunks, v5=protocol == "5")
    transport, messages = _sendables(f"mqtt://127.0.0.1:{broker.port}", count)
    link = MqttLink("fake", transport, DestinationCredentials(protocol=protocol),
                    connect_timeout=5)
    link.connect()
    try:
        link.begin_batch()
        mids = [link.publish(m) for m in messages]
        link.end_batch()
        deadline = time.monotonic() + 10
        while len(link.acks) < count and time.monotonic() < deadline and link.connected:
            link.poll(0.05)
        assert broker.error is None, broker.error
        return mids, [(a.mid, a.ok, a.reason_code) for a in link.acks], broker
    finally:
        link.close(timeout=1)
        broker.thread.join(5)


def _puback(mid: int, tail: bytes = b"") -> bytes:
    body = mid.to_bytes(2, "big") + tail
    return b"\x40" + varint(len(body)) + body


PINGRESP = b"\xd0\x00"


@pytest.mark.parametrize("chunks", [(1,), (3, 1, 7), (4096,)], ids=["bytewise", "odd", "whole"])
def test_pubacks_of_every_form_split_anyhow_with_a_pingresp_between(chunks):
    def reply(mids):
        m = mids
        return (_puback(m[0]) + PINGRESP                              # short success
                + _puback(m[1], b"\x10")                               # success, 0x10
                + _puback(m[2], b"\x87")                               # not authorised
                + PINGRESP
                + _puback(m[3], b"\x00\x05\x1f\x00\x02ok")             # success + properties
                + _puback(m[4], b"\x97\x05\x1f\x00\x02no"))            # failure + properties

    mids, acks, _broker = _acks_over(reply, chunks, 5)
    assert acks == [(mids[0], True, 0), (mids[1], True, 0x10), (mids[2], False, 0x87),
                    (mids[3], True, 0), (mids[4], False, 0x97)]


def test_mqtt_311_pubacks():
    mids, acks, _broker = _acks_over(lambda m: b"".join(_puback(x) for x in reversed(m)),
                                   (5,), 3, protocol="3.1.1")
    assert acks == [(mid, True, 0) for mid in reversed(mids)]


def test_published_bytes_carry_the_sealed_view():
    """What the fake broker received: the topic, QoS 1, no retain, the view's properties."""
    mids, acks, broker = _acks_over(lambda m: _puback(m[0]), (64,), 1)
    assert acks == [(mids[0], True, 0)]
    ((command, body),) = broker.published
    assert command == 0x32                                  # PUBLISH, QoS 1, not retained
    topic = mqtt_string("pg/fake")
    assert body.startswith(topic + mids[0].to_bytes(2, "big"))
    props_len = body[len(topic) + 2]
    props = body[len(topic) + 2:len(topic) + 3 + props_len]
    assert b"\x26" + mqtt_string("purpose") + mqtt_string("stolen_vehicle") in props
    assert props[1:3] == b"\x01\x01" and props[3] == 0x02         # format, then expiry
