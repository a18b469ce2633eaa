"""Write a device config back as TOML (the standard library reads TOML but cannot write it).

Only what the config schema holds is supported: strings, integers, floats, booleans, lists
of those (nested lists too, for polygons), tables and arrays of tables. The output is
canonical (one key per line, tables after plain keys); comments in the original file are
not kept, which is why the console saves every replaced file in its history first.
`tomllib.loads(dumps(data)) == data` holds for every supported value (tests check it).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dumps(data: dict[str, Any]) -> str:
    out: list[str] = []
    _table((), data, out)
    return "\n".join(out).strip() + "\n"


def _table(path: tuple[str, ...], table: dict[str, Any], out: list[str], header: str | None = None) -> None:
    plain = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_array(v)}
    tables = {k: v for k, v in table.items() if _is_table(v)}
    arrays = {k: v for k, v in table.items() if _is_table_array(v)}
    if header is not None:
        out.append("")
        out.append(header)
    elif path and (plain or not (tables or arrays)):
        out.append("")
        out.append(f"[{_dotted(path)}]")
    for key, value in plain.items():
        out.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables.items():
        _table(path + (key,), value, out)
    for key, items in arrays.items():
        for item in items:
            _table(path + (key,), item, out, header=f"[[{_dotted(path + (key,))}]]")


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(_key(p) for p in path)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML wants DEL escaped
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
