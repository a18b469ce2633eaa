"""Signed bundles: every way a bundle can be bad is refused, with a reason that says which."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from agent.policy.bundle import PolicyError, load_bundle, sign_bundle
from agent.policy.hotlist import sign_hotlist
from agent.policy.signing import key_id, load_private_key

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
NOW = 1_800_000_000.0


@pytest.fixture()
def doc() -> dict:
    return json.loads((POLICIES / "ct-trust-act.json").read_text())


def refused(data: bytes, trusted, active=None, now=NOW) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_bundle(data, trusted, now, active)
    return info.value


def test_round_trip(doc, dept, trusted) -> None:
    policy = load_bundle(sign_bundle(doc, dept), trusted, NOW, None)
    assert policy.version == 1 and policy.signer_key_id == key_id(dept.public_key())
    assert [d.id for d in policy.destinations] == ["own-records", "ct-fusion-center"]
    assert len(policy.digest) == 64


def test_every_single_byte_change_is_refused(doc, dept, trusted) -> None:
    data = sign_bundle(doc, dept)
    load_bundle(data, trusted, NOW, None)
    for i in range(len(data)):
        for flip in (0x01, 0x20, 0x80):
            bad = bytearray(data)
            bad[i] ^= flip
            with pytest.raises(PolicyError):
                load_bundle(bytes(bad), trusted, NOW, None)


def test_truncated_or_extended_bundle_refused(doc, dept, trusted) -> None:
    data = sign_bundle(doc, dept)
    for cut in (0, 1, len(data) // 2, len(data) - 1):
        refused(data[:cut], trusted)
    assert refused(data + b"\n", trusted).reason in {"bad_format", "invalid_json"}
    assert refused(data.replace(b",", b", ", 1), trusted).reason == "bad_format"


def test_replay_of_older_or_same_version_refused(doc, dept, trusted) -> None:
    v1 = sign_bundle(doc, dept)
    doc2 = copy.deepcopy(doc)
    doc2["version"] = 2
    v2 = sign_bundle(doc2, dept)
    assert load_bundle(v2, trusted, NOW, 1).version == 2
    assert refused(v1, trusted, active=2).reason == "rollback"
    assert refused(v2, trusted, active=2).reason == "rollback"


def test_unknown_signer_refused(doc, trusted) -> None:
    vendor = load_private_key(POLICIES / "test-keys" / "vendor-TEST-ONLY.key")
    err = refused(sign_bundle(doc, vendor), trusted)
    assert err.reason == "unknown_signer" and key_id(vendor.public_key()) in str(err)


def test_signature_from_other_key_under_trusted_key_id_refused(doc, dept, trusted) -> None:
    vendor = load_private_key(POLICIES / "test-keys" / "vendor-TEST-ONLY.key")
    forged = json.loads(sign_bundle(doc, vendor))
    forged["key_id"] = key_id(dept.public_key())
    data = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    assert refused(data, trusted).reason == "bad_signature"


def test_hotlist_bundle_is_not_a_policy(dept, trusted) -> None:
    hot = json.loads((POLICIES / "demo-hotlist.json").read_text())
    assert refused(sign_hotlist(hot, dept), trusted).reason == "wrong_kind"


def test_expired_and_not_yet_valid(doc, dept, trusted) -> None:
    data = sign_bundle(doc, dept)
    assert refused(data, trusted, now=2_100_000_000.0).reason == "expired"
    assert refused(data, trusted, now=1_700_000_000.0).reason == "not_yet_valid"


def test_invalid_json_payload(dept, trusted) -> None:
    from agent.policy.signing import seal
    assert refused(seal("policy", b"{not json", dept), trusted).reason == "invalid_json"
    assert refused(b"\xff\xfe garbage", trusted).reason == "invalid_json"


@pytest.mark.parametrize("mutate, path", [
    (lambda d: d["destinations"][1].__setitem__("class", "feds"), "destinations[1].class: 'feds' is not one of"),
    (lambda d: d.__setitem__("colour", "blue"), "colour: unknown field"),
    (lambda d: d["destinations"][0]["rule"].__setitem__("feilds", []), "destinations[0].rule.feilds: unknown field"),
    (lambda d: d.__setitem__("version", "2"), "version: expected an integer, got string"),
    (lambda d: d.__setitem__("version", 1.5), "version: expected an integer"),
    (lambda d: d["destinations"][0]["purposes"].append("immigration"), "destinations[0].purposes[8]: 'immigration'"),
    (lambda d: d["prohibitions"].__setitem__("allowed_jurisdictions", ["Connecticut"]),
     "prohibitions.allowed_jurisdictions[0]: 'Connecticut' is not an ISO 3166-2 code"),
    (lambda d: d.__setitem__("expires_at", "2036-01-01"), "expires_at: '2036-01-01' has no time zone"),
    (lambda d: d["destinations"][0].__setitem__("transport", {"broker_url": "mqtts://x:8883", "topic": "a/#"}),
     "destinations[0].transport.topic"),
    (lambda d: d["destinations"][0]["rule"].__setitem__("mode", "everything"), "destinations[0].rule.mode"),
    (lambda d: d["destinations"].append(copy.deepcopy(d["destinations"][0])), "destinations[2].id: 'own-records' repeats"),
    (lambda d: d["retention"].__setitem__("hit_max_age_days", 0), "retention.hit_max_age_days: must be > 0"),
    (lambda d: d.pop("prohibitions"), "prohibitions: required field is missing"),
    (lambda d: d["destinations"][0].__setitem__("purposes", []), "destinations[0].purposes: needs at least 1"),
])
def test_schema_problems_name_the_path(doc, dept, trusted, mutate, path) -> None:
    mutate(doc)
    with pytest.raises(PolicyError) as info:
        sign_bundle(doc, dept)  # the signer refuses too
    assert info.value.reason == "schema" and path in str(info.value)
    err = refused(sign_bundle(doc, dept, validate=False), trusted)
    assert err.reason == "schema" and path in str(err)


def test_did_you_mean(doc, dept) -> None:
    doc["destinations"][0]["purposes"].append("stolen_vehicles")
    with pytest.raises(PolicyError, match="did you mean 'stolen_vehicle'"):
        sign_bundle(doc, dept)


def test_unknown_key_type_refused(doc, dept, trusted) -> None:
    doc["destinations"][0]["rule"]["max_age_s"] = True
    assert refused(sign_bundle(doc, dept, validate=False), trusted).reason == "schema"


@pytest.mark.parametrize("topic, why", [
    ("$SYS/broker/clients", "must not start with '$'"),
    ("$share/group/reads", "must not start with '$'"),
    ("city//reads", "empty levels"),
    ("/city/reads", "empty levels"),
    ("city/reads/", "empty levels"),
    ("city/+/reads", "wildcards"),
    ("city/reads\x00", "NUL"),
    ("city/\ud800", "not valid UTF-8"),
])
def test_bad_topic_is_refused_at_install_naming_the_destination(doc, dept, trusted, topic, why) -> None:
    """Regression: the policy schema checked wildcards and NUL only, so a `$SYS/...` topic or
    one with empty levels was installed and the destination then sat unserved (the delivery
    stage refused the topic when building its link). Both now use agent/policy/topics.py."""
    doc["destinations"][0]["transport"]["topic"] = topic
    with pytest.raises(PolicyError) as info:
        sign_bundle(doc, dept)
    assert "destinations[0].transport.topic" in str(info.value) and why in str(info.value)
    err = refused(sign_bundle(doc, dept, validate=False), trusted)
    assert err.reason == "schema" and "'own-records'" in str(err) and why in str(err)


def test_delivery_and_policy_share_one_topic_rule() -> None:
    from agent.delivery import mqtt_link
    from agent.policy import topics
    assert mqtt_link.validate_topic is topics.validate_topic
