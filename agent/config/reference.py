"""The config reference, generated from the schema so the docs cannot drift from the code."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from agent.config.fields import constraint_of
from agent.config.schema import SECTION_HELP, DeviceConfig

REDACTED = "***"


def reference_markdown() -> str:
    """Markdown tables, one per section, listing every key with type, default and meaning."""
    out: list[str] = []
    for section in dataclasses.fields(DeviceConfig):
        cls = typing.get_type_hints(DeviceConfig)[section.name]
        out.append(f"### `[{section.name}]`\n\n{SECTION_HELP.get(section.name, '')}\n")
        out.extend(_table(cls, section.name))
    return "\n".join(out).rstrip() + "\n"


def _table(cls: type, prefix: str) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type]] = []
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        hint = hints[fld.name]
        inner = dataclass_in(hint)
        if inner is not None:
            many = typing.get_origin(hint) is tuple
            nested.append((f"{prefix}.{fld.name}" + ("[]" if many else ""), inner))
        cons = constraint_of(fld)
        meaning = cons.help
        if cons.choices:
            meaning += " One of: " + ", ".join(f"`{c}`" for c in cons.choices) + "."
        if cons.min is not None or cons.max is not None:
            meaning += f" Range: {_fmt(cons.min)} to {_fmt(cons.max)}."
        rows.append(f"| `{fld.name}` | {_type_name(hint)} | {_default(fld)} | {meaning} |")
    out = rows + [""]
    for name, inner in nested:
        header = f"#### `[[{name[:-2]}]]`" if name.endswith("[]") else f"#### `[{name}]`"
        out.append(header + "\n")
        out.extend(_table(inner, name.removesuffix("[]")))
    return out


def dataclass_in(hint: Any) -> type | None:
    """The dataclass a field's type holds (itself, or inside Optional/tuple), or None."""
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if args and origin is not None:
        return f"{_type_name(args[0])} (optional)"
    if dataclasses.is_dataclass(hint):
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}.get(hint, str(hint))


def _default(fld: dataclasses.Field) -> str:
    if fld.default is not dataclasses.MISSING:
        value = fld.default
    elif fld.default_factory is not dataclasses.MISSING:
        value = fld.default_factory()
        if dataclasses.is_dataclass(value):
            return "(table)"
    else:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return "`[]`" if not value else f"`{list(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (str, Path)):
        return f'`"{value}"`'
    return f"`{value}`"


def _fmt(value: float | None) -> str:
    if value is None:
        return "any"
    return str(int(value)) if float(value).is_integer() else str(value)


def redacted(config: Any) -> Any:
    """The config as plain data with every secret replaced, for printing and logging."""
    if dataclasses.is_dataclass(config):
        out = {}
        for fld in dataclasses.fields(config):
            value = getattr(config, fld.name)
            if constraint_of(fld).secret and value is not None:
                out[fld.name] = REDACTED
            else:
                out[fld.name] = redacted(value)
        return out
    if isinstance(config, tuple):
        return [redacted(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config
