"""Declarative field constraints for the device config schema.

The schema is a tree of dataclasses (see `schema.py`); each field's default, type
and constraint live together on the field, so the schema is the one place defaults
live and the validator, the `config reference` output and the README cannot drift.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Constraint:
    """What a value must satisfy beyond its type; `help` feeds the config reference."""

    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    reason: str | None = None          # wording for a failed range/pattern, e.g. "is not a port"
    secret: bool = False               # redacted in every printout

    def check(self, value: Any) -> str | None:
        """The reason `value` is unacceptable, or None."""
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {', '.join(self.choices)}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            low_ok = self.min is None or value >= self.min
            high_ok = self.max is None or value <= self.max
            if not (low_ok and high_ok):
                what = self.reason or "is out of range"
                return f"{value} {what} ({_range_text(self.min, self.max)})"
        if self.pattern is not None and isinstance(value, str):
            if not re.fullmatch(self.pattern, value):
                what = self.reason or f"does not match {self.pattern}"
                return f"{value!r} {what}"
        return None


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        joiner = " to " if low < 0 else "-"
        return f"{_num(low)}{joiner}{_num(high)}"
    if low is not None:
        return f">= {_num(low)}"
    return f"<= {_num(high)}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def setting(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING,
            **constraint: Any) -> Any:
    """A schema field: its default and its constraint in one place."""
    meta = {"constraint": Constraint(help=help, **constraint)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def constraint_of(field: dataclasses.Field) -> Constraint:
    return field.metadata.get("constraint") or Constraint(help="")
