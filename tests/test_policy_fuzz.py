"""Malformed policy and hotlist documents are refused with PolicyError, never a crash.

A crash (TypeError, KeyError...) on the install path would be a refusal nobody audited.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.policy.errors import PolicyError
from agent.policy.hotlist import hotlist_from_dict
from agent.policy.schema import policy_from_dict
from agent.policy.signing import open_envelope

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
BASE = json.loads((POLICIES / "il-2023.json").read_text())
HOT = json.loads((POLICIES / "demo-hotlist.json").read_text())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, prefix + (i,))


BASE_PATHS = [p for p in paths(BASE) if p]
HOT_PATHS = [p for p in paths(HOT) if p]


def mutate(doc, path, value, delete):
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


def parses_or_refuses(fn, doc) -> None:
    try:
        fn(doc, signer_key_id="k", digest="d")
    except PolicyError as exc:
        assert exc.reason == "schema" and str(exc)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(BASE_PATHS), json_values, st.booleans())
def test_mutated_policy_never_crashes(path, value, delete) -> None:
    parses_or_refuses(policy_from_dict, mutate(BASE, path, value, delete))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(HOT_PATHS), json_values, st.booleans())
def test_mutated_hotlist_never_crashes(path, value, delete) -> None:
    parses_or_refuses(hotlist_from_dict, mutate(HOT, path, value, delete))


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_documents_never_crash(doc) -> None:
    parses_or_refuses(policy_from_dict, doc)
    parses_or_refuses(hotlist_from_dict, doc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_random_bundle_bytes_are_refused(data) -> None:
    try:
        open_envelope(data, "policy", {})
    except PolicyError:
        return
    raise AssertionError("random bytes were accepted as a bundle")
