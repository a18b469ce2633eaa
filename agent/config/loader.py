"""Load and validate a device config: TOML in, a frozen `DeviceConfig` out, or every problem at once.

Loading is pure (it reads the one file and touches nothing else), so `config check`,
the agent's start-up and a SIGHUP reload all use the same function and agree.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agent.atomic import write_atomic
from agent.config.fields import constraint_of
from agent.config.schema import DeviceConfig
from agent.keypaths import did_you_mean, join


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ConfigError(ValueError):
    """A config that must not be used; `problems` lists every reason, each with its key path."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in config\n{lines}")


def load_config(path: Path) -> DeviceConfig:
    """Read, validate and return the config at `path`; raise ConfigError naming every problem."""
    return load_toml_as(DeviceConfig, path, CROSS_FIELD_RULES)


def parse_config(raw: bytes | str, source: str = "<config>", base_dir: Path | None = None) -> DeviceConfig:
    return parse_toml_as(DeviceConfig, raw, source, base_dir or Path.cwd(), CROSS_FIELD_RULES)


def write_config_atomically(path: Path, text: str) -> DeviceConfig:
    """Validate `text` as a config for `path`, then replace the file atomically (temp, fsync, rename).

    The file on disk is never left half-written or invalid: a bad config raises before it lands.
    """
    path = Path(path)
    config = parse_config(text, source=str(path), base_dir=path.resolve().parent)
    write_atomic(path, text.encode("utf-8"))
    return config


# --- the generic walk ----------------------------------------------------------------------------

def _build(cls: type, data: Any, path: str, problems: list[Problem], base_dir: Path) -> Any:
    if not isinstance(data, dict):
        problems.append(Problem(path, f"expected a table, got {_kind(data)}"))
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            problems.append(Problem(join(path, key), f"unknown key{did_you_mean(key, fields)}"))
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        key_path = join(path, name)
        if name not in data:
            if fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
                problems.append(Problem(key_path, "is required"))
            continue
        value = _convert(hints[name], data[name], key_path, problems, base_dir)
        if value is _INVALID:
            continue
        reason = constraint_of(fld).check(value) if value is not None else None
        if reason:
            problems.append(Problem(key_path, reason))
            continue
        values[name] = value
    try:
        return cls(**values)
    except TypeError:  # a required key was missing; already reported
        return None


_INVALID = object()


def _convert(hint: Any, value: Any, path: str, problems: list[Problem], base_dir: Path) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path, problems, base_dir)
    if origin is tuple:
        if not isinstance(value, list):
            problems.append(Problem(path, f"expected a list, got {_kind(value)}"))
            return _INVALID
        items = [_convert(args[0], item, f"{path}[{i}]", problems, base_dir) for i, item in enumerate(value)]
        return _INVALID if any(i is _INVALID for i in items) else tuple(items)
    if dataclasses.is_dataclass(hint):
        built = _build(hint, value, path, problems, base_dir)
        return _INVALID if built is None else built
    if hint is Path:
        if not isinstance(value, str) or not value:
            problems.append(Problem(path, f"expected a path (string), got {_kind(value)}"))
            return _INVALID
        return (base_dir / value) if not os.path.isabs(value) else Path(value)
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(Problem(path, f"expected true or false, got {_kind(value)}"))
            return _INVALID
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(Problem(path, f"expected an integer, got {_kind(value)}"))
            return _INVALID
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(Problem(path, f"expected a number, got {_kind(value)}"))
            return _INVALID
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            problems.append(Problem(path, f"expected a string, got {_kind(value)}"))
            return _INVALID
        return value
    raise TypeError(f"schema type not supported: {hint!r}")  # a bug in schema.py, not in the config


def _kind(value: Any) -> str:
    names = {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})" if not isinstance(value, dict) \
        else "a table"


# --- cross-field rules: small, named, each testable alone -------------------------------------------

def source_needs_path(config: DeviceConfig) -> list[Problem]:
    if config.source.path is None:
        return [Problem("source.path", f"is required for source kind '{config.source.kind}'")]
    return []


def backoff_bounds_ordered(config: DeviceConfig) -> list[Problem]:
    sup = config.supervisor
    if sup.backoff_initial_s > sup.backoff_max_s:
        return [Problem("supervisor.backoff_initial_s",
                        f"{sup.backoff_initial_s} is larger than supervisor.backoff_max_s ({sup.backoff_max_s})")]
    return []


def destination_ids_unique(config: DeviceConfig) -> list[Problem]:
    seen: set[str] = set()
    problems = []
    for i, dest in enumerate(config.mqtt.destinations):
        if dest.id in seen:
            problems.append(Problem(f"mqtt.destinations[{i}].id", f"'{dest.id}' is listed twice"))
        seen.add(dest.id)
    return problems


def client_cert_has_key(config: DeviceConfig) -> list[Problem]:
    problems = []
    for i, dest in enumerate(config.mqtt.destinations):
        if (dest.client_cert is None) != (dest.client_key is None):
            problems.append(Problem(f"mqtt.destinations[{i}]", "client_cert and client_key go together"))
    return problems


def location_complete(config: DeviceConfig) -> list[Problem]:
    if (config.unit.latitude is None) != (config.unit.longitude is None):
        return [Problem("unit", "latitude and longitude go together")]
    return []


def plate_sizes_ordered(config: DeviceConfig) -> list[Problem]:
    rec = config.recognizer
    if rec.min_plate_px >= rec.max_plate_px:
        return [Problem("recognizer.min_plate_px",
                        f"{rec.min_plate_px} is not smaller than recognizer.max_plate_px ({rec.max_plate_px})")]
    return []


def policy_has_trusted_key(config: DeviceConfig) -> list[Problem]:
    if (config.policy.bundle is not None or config.policy.hotlists) and not config.policy.trusted_keys:
        return [Problem("policy.trusted_keys", "is empty, so no policy or hotlist could ever be accepted")]
    return []


CROSS_FIELD_RULES: tuple[Callable[[DeviceConfig], list[Problem]], ...] = (
    source_needs_path,
    backoff_bounds_ordered,
    destination_ids_unique,
    client_cert_has_key,
    location_complete,
    plate_sizes_ordered,
    policy_has_trusted_key,
)


def load_toml_as(cls: type, path: Path, rules: tuple[Callable[[Any], list[Problem]], ...] = ()) -> Any:
    """parse_toml_as() of the file at `path` (relative paths resolved against its folder)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read file: {exc.strerror}")]) from exc
    return parse_toml_as(cls, raw, str(path), path.resolve().parent, rules)


def parse_toml_as(cls: type, raw: bytes | str, source: str, base_dir: Path,
                  rules: tuple[Callable[[Any], list[Problem]], ...] = ()) -> Any:
    """Any other schema dataclass (e.g. the receiver's config) loaded with the same rules:
    unknown keys refused, every problem reported with its key path, then `rules` applied."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("", f"not valid TOML: {exc}")]) from exc
    problems: list[Problem] = []
    config = _build(cls, data, "", problems, base_dir)
    if not problems:
        for rule in rules:
            problems.extend(rule(config))
    if problems:
        raise ConfigError(source, problems)
    return config
