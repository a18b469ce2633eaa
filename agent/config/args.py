"""Command-line options that set a config key are checked by that key's own schema constraint.

Why: `plategate recognize --region` and `--threads` mean what `recognizer.region` and
`recognizer.threads` mean in a unit's config, so they must accept and refuse exactly the same
values, with the same reason, instead of a second, looser rule living in the CLI.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable

from agent.config.fields import constraint_of

_PARSERS: dict[type, tuple[Callable[[str], Any], str]] = {
    int: (int, "an integer"), float: (float, "a number"), str: (str, "a string")}


def schema_option(section: type, name: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that converts a value like config key ``name`` of ``section``
    (a schema dataclass) and refuses it with that key's reason."""
    field = {f.name: f for f in dataclasses.fields(section)}[name]
    hint = typing.get_type_hints(section)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    parse, kind = _PARSERS[hint]
    constraint = constraint_of(field)

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        reason = constraint.check(value)
        if reason:
            raise argparse.ArgumentTypeError(reason)
        return value

    convert.__name__ = name
    return convert
