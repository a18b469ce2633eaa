"""Load and validate a device config: TOML in, a frozen `DeviceConfig` out, or every problem at once.

Loading is pure (it reads the one file and touches nothing else), so `config check`,
the agent's start-up and a SIGHUP reload all use the same function and agree.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agent.atomic import write_atomic
from agent.config.fields import constraint_of
from agent.config.schema import STREAM_SCHEMES, DeviceConfig
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

def source_fits_kind(config: DeviceConfig) -> list[Problem]:
    """Each source kind names its input with its own key: a file or folder (`path`), a stream URL
    (`url`) or a camera (`device`); a value in the wrong key (a URL as a path) is refused."""
    source = config.source
    wanted = {"video_file": "path", "image_folder": "path", "v4l2": "device", "rtsp": "url",
              "http_mjpeg": "url"}[source.kind]
    problems = []
    for key in ("path", "url", "device"):
        value = getattr(source, key)
        if key == wanted and value is None:
            problems.append(Problem(f"source.{key}", f"is required for source kind '{source.kind}'"))
        elif key != wanted and value is not None:
            problems.append(Problem(f"source.{key}", f"is not used by source kind '{source.kind}', "
                                                     f"which reads source.{wanted}"))
    if source.path is not None and wanted == "path":
        scheme = _url_scheme_in_path(source.path)
        if scheme:
            problems.append(Problem("source.path", f"is a {scheme}:// URL, not a file or folder; a stream "
                                                   f"needs source.kind = \"{_kind_for(scheme)}\" and source.url"))
    if source.url is not None and wanted == "url":
        problems.extend(_stream_url_problems(source.kind, source.url))
    return problems


def _url_scheme_in_path(path: Path) -> str | None:
    """`path = "rtsp://cam/x"` arrives as base_dir/"rtsp:/cam/x": find the scheme it came from."""
    for part in path.parts:
        match = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*):", part)
        if match:
            return match.group(1).lower()
    return None


def _kind_for(scheme: str) -> str:
    return next((kind for kind, schemes in STREAM_SCHEMES.items() if scheme in schemes), "rtsp")


def _stream_url_problems(kind: str, url: str) -> list[Problem]:
    parts = urllib.parse.urlsplit(url)
    schemes = STREAM_SCHEMES[kind]
    if parts.scheme.lower() not in schemes or not parts.hostname:
        shown = "a file path" if not parts.scheme else f"a {parts.scheme}: URL"
        return [Problem("source.url", f"is {shown}, not a {' or '.join(s + '://' for s in schemes)} URL "
                                      f"(source kind '{kind}'); a file is replayed with kind \"video_file\" "
                                      "and source.path")]
    if parts.username is not None or parts.password is not None:
        return [Problem("source.url", "holds credentials; put them in source.username and source.password "
                                      "(kept out of logs and `config show`)")]
    return []


def scene_polygons_valid(config: DeviceConfig) -> list[Problem]:
    """ROI and privacy masks: at least three [x, y] points, each a fraction of the frame (0-1)."""
    polygons = []
    if config.scene.roi:
        polygons.append(("scene.roi", config.scene.roi))
    polygons += [(f"scene.privacy_masks[{i}]", mask) for i, mask in enumerate(config.scene.privacy_masks)]
    problems = []
    for key, points in polygons:
        if len(points) < 3:
            problems.append(Problem(key, f"has {len(points)} point(s); a polygon needs at least 3"))
            continue
        for j, point in enumerate(points):
            if len(point) != 2 or not all(0.0 <= v <= 1.0 for v in point):
                problems.append(Problem(f"{key}[{j}]", f"{list(point)} is not an [x, y] point with both "
                                                       "between 0 and 1 (fractions of the frame)"))
    return problems


def reconnect_bounds_ordered(config: DeviceConfig) -> list[Problem]:
    source = config.source
    if source.reconnect_initial_s > source.reconnect_max_s:
        return [Problem("source.reconnect_initial_s", f"{source.reconnect_initial_s} is larger than "
                                                      f"source.reconnect_max_s ({source.reconnect_max_s})")]
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


def status_link_encrypted(config: DeviceConfig) -> list[Problem]:
    """The status link carries the unit's state, counters and any MQTT password: plain
    mqtt:// only to a broker on this unit (a 127.x literal), as for a policy destination."""
    url = config.mqtt.status.url
    if not url or not url.startswith("mqtt://"):
        return []
    from agent.policy.schema import is_loopback_host
    host = urllib.parse.urlsplit(url).hostname
    if is_loopback_host(host):
        return []
    return [Problem("mqtt.status.url", f"'{url}' would send the unit's status and password in clear "
                                       "across the network: use mqtts:// with server_key_sha256 "
                                       "(plain mqtt:// only to a 127.x.x.x broker)")]


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
    source_fits_kind,
    scene_polygons_valid,
    reconnect_bounds_ordered,
    backoff_bounds_ordered,
    destination_ids_unique,
    client_cert_has_key,
    status_link_encrypted,
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
