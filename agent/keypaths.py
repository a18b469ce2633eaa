"""What the config validator and the policy validator share: key paths and "did you mean".

The two validate different documents (a TOML device config into dataclasses with
defaults; a signed JSON policy with no defaults and cross-references between its parts),
so each keeps its own engine; what they must say alike, they say through these.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def join(path: str, key: str | int) -> str:
    """The key path of `key` under `path`: `a.b`, `a[2]`, or `key` at the top."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(value, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
