"""Read provenance: every read signed by its unit, sealed where the policy says, opened only by
its department; each forgery a receiver must catch is tried here without a broker."""
from __future__ import annotations

import base64
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.audit.records import expanded_records
from agent.delivery.records import encode_payload
from helpers.soak import destination_doc, make_read, policy_doc
from agent.policy.bundle import parse_policy_json, sign_bundle
from agent.policy.errors import PolicyError
from agent.policy.schema import policy_to_dict
from agent.policy.signing import key_id
from agent.provenance import egress
from agent.provenance.keys import load_unit_key_or_create, raw_public
from agent.provenance.messages import (Rejected, UnitKey, canonical_json, open_message,
                                       seal_message, signed_bytes, wire_message)
from agent.receiver.validation import validate_read_message
from receiver_kit import SCHEMA_VALIDATOR, check_schema, genuine, new_unit, sample_fields

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

BROKER = "mqtts://127.0.0.1:1"   # never contacted
PIN = "0" * 64


@pytest.fixture
def parties():
    unit = new_unit("unit-0042")
    dept = X25519PrivateKey.generate()
    other_dept = X25519PrivateKey.generate()
    registry = {(unit.unit_id, unit.key_id): UnitKey(unit.unit_id, unit.key_id, unit.key.public_key())}
    return unit, dept, other_dept, registry


def opener(registry, keys=(), destinations=("county",), require_sealed=False):
    seal_keys = {key_id(k.public_key()): k for k in keys}
    return lambda data: open_message(data, destinations=frozenset(destinations), unit_keys=registry,
                                     seal_keys=seal_keys, validate=validate_read_message,
                                     require_sealed=require_sealed)


def reason(open_fn, data) -> str:
    with pytest.raises(Rejected) as info:
        open_fn(data)
    return info.value.reason


# --- the two forms ----------------------------------------------------------------------

def test_clear_read_verifies_and_carries_exactly_its_fields(parties):
    unit, _, _, registry = parties
    data = genuine(unit, "county", 1)
    read = opener(registry)(data)
    assert read.read == sample_fields(1) and not read.sealed
    assert (read.unit_id, read.key_id, read.destination) == ("unit-0042", unit.key_id, "county")


def test_sealed_read_shows_the_broker_only_the_envelope(parties):
    unit, dept, _, registry = parties
    data = genuine(unit, "county", 7, seal_to=raw_public(dept.public_key()), routing=("camera_id",))
    envelope = check_schema(data)
    assert set(envelope) == {"schema", "unit_id", "key_id", "read_id", "destination", "routing",
                             "seal_key_id", "sealed"}
    assert envelope["routing"] == {"camera_id": "cam-7"}
    for secret in (b"KT00007", b"41.765", b"0.9312", b"stolen_vehicle", b"2026-12-05"):
        assert secret not in data
    read = opener(registry, [dept])(data)
    assert read.sealed and read.read == sample_fields(7) and read.purpose == "stolen_vehicle"


# --- each forgery is refused, with its own reason ----------------------------------------

def test_forged_read_bad_signature(parties):
    unit, _, _, registry = parties
    obj = json.loads(genuine(unit, "county", 1))
    obj["read"]["plate"] = "FAKE123"
    assert reason(opener(registry), json.dumps(obj).encode()) == "bad_signature"
    obj = json.loads(genuine(unit, "county", 1))
    obj["signature"] = base64.b64encode(b"\0" * 64).decode()
    assert reason(opener(registry), json.dumps(obj).encode()) == "bad_signature"


def test_read_replayed_to_another_destination(parties):
    """A read signed for one destination is worthless at another: relabelled, its signature
    fails; left as it was, the other receiver refuses it as not addressed to it."""
    unit, _, _, registry = parties
    data = genuine(unit, "state-fusion", 1)
    assert reason(opener(registry), data) == "wrong_destination"
    obj = json.loads(data)
    obj["destination"] = "county"
    assert reason(opener(registry), json.dumps(obj).encode()) == "bad_signature"


def test_sealed_for_another_departments_key(parties):
    unit, dept, other_dept, registry = parties
    data = genuine(unit, "county", 1, seal_to=raw_public(other_dept.public_key()))
    assert reason(opener(registry, [dept]), data) == "undecryptable"
    # Claiming the right key id does not help: the HPKE open fails.
    obj = json.loads(data)
    obj["seal_key_id"] = key_id(dept.public_key())
    assert reason(opener(registry, [dept]), json.dumps(obj).encode()) == "undecryptable"


def test_sealed_envelope_cannot_be_relabelled(parties):
    unit, dept, _, registry = parties
    data = genuine(unit, "county", 1, seal_to=raw_public(dept.public_key()), routing=("camera_id",))
    for name, value in (("read_id", "r99999999"), ("unit_id", "unit-0043")):
        obj = json.loads(data)
        obj[name] = value
        assert reason(opener(registry, [dept]), json.dumps(obj).encode()) == "undecryptable", name
    obj = json.loads(data)
    obj["routing"] = {"camera_id": "cam-elsewhere"}
    assert reason(opener(registry, [dept]), json.dumps(obj).encode()) == "undecryptable"


def test_envelope_that_lies_about_its_sealed_read_is_invalid(parties):
    """Sealed by someone holding only the department's PUBLIC key (anyone): the envelope is
    bound, but must also agree with the signed read inside."""
    unit, dept, _, registry = parties
    clear = genuine(unit, "county", 1)
    lying = seal_message(clear, unit_id=unit.unit_id, unit_key_id=unit.key_id, destination="county",
                         read_id="r00000001", routing={"camera_id": "cam-elsewhere"},
                         recipient=dept.public_key())
    assert reason(opener(registry, [dept]), lying) == "invalid"
    other_id = seal_message(clear, unit_id=unit.unit_id, unit_key_id=unit.key_id, destination="county",
                            read_id="r00000002", routing={}, recipient=dept.public_key())
    assert reason(opener(registry, [dept]), other_id) == "invalid"


def test_unsigned_unknown_revoked_and_not_sealed(parties):
    unit, dept, _, registry = parties
    legacy = json.loads(genuine(unit, "county", 1))
    legacy = {"schema": "plategate.read/1", "read_id": legacy["read_id"], "destination": "county",
              "purpose": "stolen_vehicle", "policy_version": 1, "read": legacy["read"]}
    assert reason(opener(registry), json.dumps(legacy).encode()) == "unsigned"
    stripped = json.loads(genuine(unit, "county", 1))
    del stripped["signature"]
    assert reason(opener(registry), json.dumps(stripped).encode()) == "unsigned"
    stranger = new_unit("unit-0042")          # same unit id, a key nobody registered
    assert reason(opener(registry), genuine(stranger, "county", 1)) == "unknown_unit"
    revoked = {k: UnitKey(v.unit_id, v.key_id, v.public_key, revoked=True) for k, v in registry.items()}
    assert reason(opener(revoked), genuine(unit, "county", 1)) == "revoked"
    assert reason(opener(registry, [dept], require_sealed=True), genuine(unit, "county", 1)) == "not_sealed"
    assert reason(opener(registry), b"not json") == "invalid"
    assert reason(opener(registry), b'{"schema":"plategate.read/2","sealed":"x"}') == "invalid"


# --- canonical form and the two validators ------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6),
       destination=st.text(min_size=1, max_size=10), purpose=st.text(min_size=1, max_size=10))
def test_receiver_rebuilds_exactly_the_bytes_the_unit_signed(payload, destination, purpose):
    """The unit signs the payload bytes as stored; the receiver re-encodes what it parsed.
    Both must be the same bytes for any JSON a payload can hold (unicode, floats, nesting)."""
    unit_bytes = signed_bytes("u", destination, "r1", purpose, 3, encode_payload(payload))
    parsed = json.loads(encode_payload(payload))
    assert signed_bytes("u", destination, "r1", purpose, 3, canonical_json(parsed)) == unit_bytes
    assert unit_bytes.startswith(b"plategate.read/2 signature\n")
    assert json.loads(unit_bytes.split(b"\n", 1)[1]) == {
        "destination": destination, "policy_version": 3, "purpose": purpose, "read": parsed,
        "read_id": "r1", "unit_id": "u"}


UNIT = new_unit("unit-0001")
DEPT = X25519PrivateKey.generate()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_compiled_validator_agrees_with_the_reference(data):
    """The receiver's fastjsonschema validator and the reference jsonschema one agree."""
    unit, dept = UNIT, DEPT
    sealed = data.draw(st.booleans())
    obj = json.loads(genuine(unit, "county", 1, seal_to=raw_public(dept.public_key()) if sealed else None))
    target = obj if sealed or data.draw(st.booleans()) else obj["read"]
    key = data.draw(st.sampled_from(sorted(target) + ["extra"]))
    target[key] = data.draw(JSON_VALUES)
    assert (validate_read_message(obj) is None) == SCHEMA_VALIDATOR.is_valid(obj)


# --- policy: sealing keys and routing metadata ----------------------------------------------

def sealed_policy(now, dept_pub: bytes, **kwargs) -> dict:
    dest = destination_doc("county", BROKER, "t/county", pin=PIN, seal_to=dept_pub, **kwargs)
    return policy_doc(1, [dest, destination_doc("open", BROKER, "t/open", pin=PIN)], now)


def test_policy_sealing_round_trips(dept):
    now = time.time()
    pub = raw_public(X25519PrivateKey.generate().public_key())
    doc = sealed_policy(now, pub, routing_metadata=["camera_id", "timestamp"])
    policy = parse_policy_json(sign_bundle(doc, dept))
    sealing = policy.destination("county").sealing
    assert sealing.public_key == pub and sealing.routing_metadata == {"camera_id", "timestamp"}
    assert policy.destination("open").sealing is None and not policy.require_sealed
    again = parse_policy_json(sign_bundle(policy_to_dict(policy), dept))
    assert again.destination("county") == policy.destination("county")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["destinations"][0]["sealing"].update(routing_metadata=["plate"]), "plate"),
    (lambda d: d["destinations"][0]["sealing"].update(routing_metadata=["location"]),
     "not among the rule's fields"),
    (lambda d: d["destinations"][0]["sealing"].update(x25519_public_key="ab" * 31), "does not match"),
    (lambda d: d["destinations"][0]["sealing"].update(key="x"), "unknown field"),
    (lambda d: d.update(require_sealed=True), "requires every destination to be sealed"),
    (lambda d: d.update(require_sealed="yes"), "expected true or false"),
])
def test_policy_sealing_refused(change, message):
    now = time.time()
    doc = sealed_policy(now, b"\x09" * 32, fields=("plate", "camera_id"))
    change(doc)
    with pytest.raises(PolicyError) as info:
        from agent.policy.schema import policy_from_dict
        policy_from_dict(doc, signer_key_id="", digest="")
    assert message in str(info.value)


# --- the egress gate: signed always, sealed where required ----------------------------------

def queue_one(stack, dest_doc) -> tuple:
    policy = stack.rig.install(policy_doc(1, [dest_doc], time.time()))
    now = time.time()
    stack.outbox.accept([make_read(1, now)], now)
    (delivery,) = stack.outbox.next_batch(dest_doc["id"], 0, 10)
    return policy.destination(dest_doc["id"]), delivery


def test_gate_seals_for_a_sealed_destination(stack):
    dept = X25519PrivateKey.generate()
    dest, delivery = queue_one(stack, destination_doc("county", BROKER, "t/county", pin=PIN,
                                                      seal_to=raw_public(dept.public_key())))
    data = stack.gate.wire(delivery, dest)
    signer = stack.gate.signer
    registry = {(signer.unit_id, signer.key_id): UnitKey(signer.unit_id, signer.key_id,
                                                         signer.key.public_key())}
    assert json.loads(data)["sealed"] and delivery.read.plate.encode() not in data
    assert opener(registry, [dept])(data).read == json.loads(delivery.payload)


def test_gate_refuses_clear_text_to_a_sealed_destination(stack, monkeypatch):
    """Pins the rule, not the builder: if the message builder ever returned the clear form
    for a sealed destination, the gate must still refuse to hand it over."""
    dept = X25519PrivateKey.generate()
    dest, delivery = queue_one(stack, destination_doc("county", BROKER, "t/county", pin=PIN,
                                                      seal_to=raw_public(dept.public_key())))
    monkeypatch.setattr(egress, "wire_message",
                        lambda *a, **k: wire_message(*a, **dict(k, seal_to=None)))
    assert stack.gate.wire(delivery, dest) is None
    stack.audit.flush()
    refused = expanded_records(stack.audit.path, "delivery.refused")
    assert refused[-1]["fields"]["rule_id"] == "provenance"
    assert "requires sealed reads" in refused[-1]["fields"]["reason"]


def test_gate_sends_nothing_unsigned(stack):
    dest, delivery = queue_one(stack, destination_doc("city", BROKER, "t/city", pin=PIN))
    stack.gate.signer = None
    assert stack.gate.wire(delivery, dest) is None


def test_unit_key_created_once_and_kept(tmp_path):
    first = load_unit_key_or_create(tmp_path / "keys" / "unit.key")
    assert (tmp_path / "keys" / "unit.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys" / "unit.pub").exists()
    again = load_unit_key_or_create(tmp_path / "keys" / "unit.key")
    assert raw_public(again.public_key()) == raw_public(first.public_key())


def test_policy_explain_says_what_the_broker_sees(tmp_path, capsys):
    from agent.cli import main
    from agent.policy.schema import format_time
    now = time.time()
    doc = sealed_policy(now, raw_public(X25519PrivateKey.generate().public_key()),
                        routing_metadata=["camera_id"])
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    read = tmp_path / "read.json"
    read.write_text(json.dumps({"plate": "ABC1234", "confidence": 0.9, "seen_at": format_time(now),
                                "camera_id": "cam-1"}))
    assert main(["policy", "explain", str(path), str(read)]) == 0
    out = capsys.readouterr().out
    assert "sealed; the broker sees only: camera_id" in out and out.count("sealed;") == 1
    assert main(["policy", "explain", str(path), str(read), "--json"]) == 0
    rows = {r["destination"]: r for r in json.loads(capsys.readouterr().out)["decisions"]}
    assert rows["county"]["sealed"] and rows["county"]["routing_metadata"] == ["camera_id"]
    assert not rows["open"]["sealed"]


def test_receive_keygen_prints_the_policy_key(tmp_path, capsys):
    from agent.cli import main
    from agent.provenance.keys import load_x25519_private
    assert main(["receive", "keygen", "--out", str(tmp_path / "dept")]) == 0
    lines = capsys.readouterr().out.splitlines()
    key = load_x25519_private(tmp_path / "dept.key")
    assert lines[0] == f"key id {key_id(key.public_key())}"
    assert lines[1] == f"x25519_public_key {raw_public(key.public_key()).hex()}"
    assert (tmp_path / "dept.key").stat().st_mode & 0o777 == 0o600
    assert main(["receive", "keygen", "--out", str(tmp_path / "dept")]) == 2   # never overwritten
