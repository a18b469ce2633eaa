"""The read message JSON Schema (agent/schemas/read-message.json) as a validator function.

The schema in the repo is the contract: the receiver checks every message (and the clear
read inside every sealed one) against it before anything else reads a field. It is
compiled with fastjsonschema (about 30 µs a message, against 300 µs for the reference
`jsonschema` package, which the tests use to check the same messages independently). The
schema is written in draft 2020-12 but uses nothing draft-07 lacks besides `$defs`; its
local `$ref`s are expanded here before compiling, so the compiler never resolves a
reference itself (it would try to fetch one it cannot place over the network).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "read-message.json"


@functools.lru_cache(maxsize=1)
def read_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _inline(node, root: dict):
    """`node` with every local `$ref` ("#/$defs/...") replaced by what it points to."""
    if isinstance(node, list):
        return [_inline(item, root) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"{SCHEMA_PATH}: only local $refs are supported, not {ref!r}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        merged = dict(_inline(target, root))
        merged.update({k: _inline(v, root) for k, v in node.items() if k != "$ref"})
        return merged
    return {k: _inline(v, root) for k, v in node.items() if k not in ("$defs", "$id", "$schema")}


def _compile(schema: dict):
    import fastjsonschema
    return fastjsonschema.compile(dict(schema, **{"$schema": "http://json-schema.org/draft-07/schema#"}),
                                  handlers={})


@functools.lru_cache(maxsize=1)
def _validators() -> dict:
    schema = read_schema()
    return {form: _compile(_inline(schema["$defs"][form], schema)) for form in ("clear", "sealed")}


def validate_read_message(obj: dict) -> str | None:
    """None if `obj` is a valid plategate.read/2 message (either form), else the reason.

    The schema is `oneOf` the two forms, and they exclude each other (the clear form allows
    no `sealed` key, the sealed form requires one), so checking the one form an object can
    be is the same as checking `oneOf`, at half the cost; tests/test_provenance.py checks
    this agrees with the reference validator on the whole schema.
    """
    import fastjsonschema
    form = "sealed" if isinstance(obj, dict) and "sealed" in obj else "clear"
    try:
        _validators()[form](obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        return f"{form} form: {exc.message[:300]}"
    return None
