"""Which config keys the console may change, and the staged edit / apply / rollback of the config file.

The console changes device settings only (DESIGN invariant 10): network, camera, ROI and
masks, broker credentials, logging, location. Everything else is refused by `check_key`,
deny by default; the sharing policy, trusted keys, hotlists, HMAC keys and the audit settings
are named with their own reason. This is enforced here, in the one code path that edits
the file (`ConfigEditor`), including rollback: a rollback restores only the keys the
console may change, so an older file can never bring back a trusted key an administrator
has since removed.

Key paths are dotted (`camera`-like sections and keys as in the TOML); per-destination
credentials are `mqtt.destinations.<destination id>.<field>`.
"""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import hashlib
import time
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agent.atomic import write_atomic
from agent.config import toml_out
from agent.config.fields import constraint_of
from agent.config.loader import ConfigError, Problem, parse_config
from agent.config.reference import dataclass_in
from agent.config.schema import DeviceConfig

DESTINATIONS = ("mqtt", "destinations")
HISTORY_KEEP = 20

# (pattern, allowed, refusal code, reason); first match wins; anything unmatched is refused.
# `policy_key`: the key decides what is shared or with whom (widening it must take a signed bundle).
POLICY_REASON = "part of the sharing policy: only a signed policy bundle changes it (`policy install`)"
KEY_RULES: tuple[tuple[str, bool, str, str], ...] = (
    ("policy.trusted_keys", False, "policy_key", "trusted department keys are set when the unit is "
                                                 "provisioned, never from the console"),
    ("policy.hotlists", False, "policy_key", "hotlists change only by a signed bundle (`hotlist install`)"),
    ("policy.hmac_keys", False, "policy_key", "HMAC keys decide what destinations can match; they are "
                                              "provisioned, never set from the console"),
    ("policy", False, "policy_key", POLICY_REASON),
    ("policy.*", False, "policy_key", POLICY_REASON),
    ("delivery.*", False, "policy_key", "decides which destinations the unit may reach (plain MQTT); it "
                                        "never changes from the console"),
    ("audit.*", False, "not_device_setting", "part of the audit trail; the console cannot change it"),
    ("console.password_hash", False, "not_device_setting", "use `passwd` to change the console password"),
    ("console.*", False, "not_device_setting", "console security settings change only in the config file "
                                               "on the unit"),
    ("unit.latitude", True, "", ""),
    ("unit.longitude", True, "", ""),
    ("logging.*", True, "", ""),
    ("source.*", True, "", ""),
    ("scene.*", True, "", ""),
    ("network.*", True, "", ""),
    ("mqtt.keepalive_s", True, "", ""),
    ("mqtt.status.*", True, "", ""),
    ("mqtt.destinations.*.username", True, "", ""),
    ("mqtt.destinations.*.password", True, "", ""),
    ("mqtt.destinations.*.client_cert", True, "", ""),
    ("mqtt.destinations.*.client_key", True, "", ""),
    ("mqtt.destinations.*.protocol", True, "", ""),
)
NOT_DEVICE = ("not a device setting the console may change (network, camera, ROI and masks, broker "
              "credentials, logging, location)")


class EditError(ValueError):
    """A refused or invalid edit; `reason` is short and machine-readable, the message says what and where."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


def check_key(key: str) -> tuple[bool, str, str]:
    """(allowed, reason code, explanation) for a dotted key path."""
    for pattern, allowed, code, why in KEY_RULES:
        if fnmatch.fnmatchcase(key, pattern):
            return (True, "", "") if allowed else (False, code, f"{key}: {why}")
    return False, "not_device_setting", f"{key}: {NOT_DEVICE}"


def is_policy_related(key: str) -> bool:
    return check_key(key)[1] == "policy_key"


# --- the schema, by key path ------------------------------------------------------------------------

def field_for(key: str) -> tuple[Any, dataclasses.Field] | None:
    """(type hint, field) of a key path in the schema, or None if there is no such setting."""
    parts = key.split(".")
    if tuple(parts[:2]) == DESTINATIONS:
        if len(parts) != 4 or parts[3] == "id":
            return None
        parts = ["mqtt", "destinations", parts[3]]
    cls: Any = DeviceConfig
    hint: Any = None
    fld: dataclasses.Field | None = None
    for part in parts:
        if cls is None or not dataclasses.is_dataclass(cls):
            return None
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return None
        fld, hint = fields[part], typing.get_type_hints(cls)[part]
        cls = dataclass_in(hint)
    if fld is None or dataclass_in(hint) is not None:
        return None  # a table, not a setting
    return hint, fld


def is_secret(key: str) -> bool:
    found = field_for(key)
    return bool(found and constraint_of(found[1]).secret)


def settable_keys(doc: dict) -> list[str]:
    """Every key path the console may change, for `config keys` and tab completion."""
    out = []
    for key in _schema_paths(DeviceConfig, ()):
        if "<id>" in key:
            ids = [d.get("id") for d in doc.get("mqtt", {}).get("destinations", []) if isinstance(d, dict)]
            out.extend(key.replace("<id>", str(i)) for i in ids if i)
            out.append(key)
        else:
            out.append(key)
    return [k for k in out if check_key(k.replace("<id>", "x"))[0]]


def _schema_paths(cls: Any, prefix: tuple[str, ...]) -> list[str]:
    paths = []
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        hint = hints[fld.name]
        inner = dataclass_in(hint)
        if inner is not None and typing.get_origin(hint) is tuple:
            paths.extend(_schema_paths(inner, prefix + (fld.name, "<id>")))
        elif inner is not None:
            paths.extend(_schema_paths(inner, prefix + (fld.name,)))
        else:
            paths.append(".".join(prefix + (fld.name,)))
    return [p for p in paths if not p.endswith("<id>.id")]


# --- raw TOML documents as flat key paths ---------------------------------------------------------------

def flatten(doc: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in doc.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(flatten(value, key + "."))
        elif key == "mqtt.destinations" and isinstance(value, list):
            for entry in value:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    for field_name, field_value in entry.items():
                        if field_name != "id":  # the entry is named by its id in every key path
                            out[f"{key}.{entry['id']}.{field_name}"] = field_value
        else:
            out[key] = value
    return out


def set_path(doc: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    if tuple(parts[:2]) == DESTINATIONS and len(parts) == 4:
        entries = doc.setdefault("mqtt", {}).setdefault("destinations", [])
        entry = next((e for e in entries if isinstance(e, dict) and e.get("id") == parts[2]), None)
        if entry is None:
            entry = {"id": parts[2]}
            entries.append(entry)
        entry[parts[3]] = value
        return
    table = doc
    for part in parts[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise EditError("invalid", f"{key}: {part} is not a table in the config file")
    table[parts[-1]] = value


def remove_path(doc: dict, key: str) -> None:
    parts = key.split(".")
    if tuple(parts[:2]) == DESTINATIONS and len(parts) == 4:
        for entry in doc.get("mqtt", {}).get("destinations", []):
            if isinstance(entry, dict) and entry.get("id") == parts[2]:
                entry.pop(parts[3], None)
        return
    table: Any = doc
    for part in parts[:-1]:
        table = table.get(part) if isinstance(table, dict) else None
        if table is None:
            return
    if isinstance(table, dict):
        table.pop(parts[-1], None)


def parse_value(key: str, text: str) -> Any:
    """A value typed at the console: TOML syntax (15, true, "text", [..]), or a bare word as text."""
    found = field_for(key)
    hint = found[0] if found else None
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    if base[0] in (str, Path) and not isinstance(value, str):
        value = text  # "15" for a text key stays text
    return value


# --- the editor ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Applied:
    keys: list[str]           # key paths changed (never their values)
    old_digest: str
    new_digest: str


class ConfigEditor:
    """Staged changes to one config file; `apply` validates with the config schema and writes atomically.

    `file_checks` (the checks `plategate run` makes of the files a config names, handed in
    by the console's context) makes `apply` refuse a change that adds a file problem: the
    unit would refuse to start with it (exit 78, and systemd does not restart it), so a
    technician's typo must fail at the console, not at the next restart. Problems the file
    already had do not block other changes."""

    def __init__(self, path: Path, history_dir: Path,
                 file_checks: Callable[[DeviceConfig], list[Problem]] | None = None):
        self.path = Path(path)
        self.history_dir = Path(history_dir)
        self.file_checks = file_checks
        self.staged: dict[str, Any] = {}   # key path -> value, or UNSET

    UNSET = object()

    # -- reading
    def current_doc(self) -> tuple[bytes, dict]:
        raw = self.path.read_bytes()
        try:
            return raw, tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise EditError("invalid", f"{self.path} is not valid TOML: {exc}") from exc

    def validate(self, doc: dict) -> DeviceConfig:
        return parse_config(toml_out.dumps(doc), source=str(self.path), base_dir=self.path.resolve().parent)

    def effective(self, doc: dict) -> dict[str, Any]:
        """Every key path with its effective value (defaults filled in) for `doc`."""
        return flatten(_plain(self.validate(doc)))

    def staged_doc(self) -> dict:
        _, doc = self.current_doc()
        doc = copy.deepcopy(doc)
        for key, value in self.staged.items():
            if value is self.UNSET:
                remove_path(doc, key)
            else:
                set_path(doc, key, value)
        return doc

    # -- editing
    def set(self, key: str, text: str) -> list[str]:
        """Stage `key = text`; refused (EditError) if not allowed or invalid. Returns other problems to fix."""
        self._check(key)
        value = parse_value(key, text)
        return self._stage(key, value)

    def unset(self, key: str) -> list[str]:
        self._check(key)
        return self._stage(key, self.UNSET)

    def _check(self, key: str) -> None:
        allowed, code, why = check_key(key)
        if not allowed:
            raise EditError(code, f"refused: {why}")
        if field_for(key) is None:
            raise EditError("unknown_key", f"{key}: no such setting (`config keys` lists them)")

    def _stage(self, key: str, value: Any) -> list[str]:
        before = self.staged.get(key, None)
        had = key in self.staged
        self.staged[key] = value
        try:
            self.validate(self.staged_doc())
        except ConfigError as exc:
            mine = [str(p) for p in exc.problems if p.path == key or p.path.startswith(key + ".")
                    or _same_entry(p.path, key)]
            if mine:
                if had:
                    self.staged[key] = before
                else:
                    del self.staged[key]
                raise EditError("invalid", "; ".join(mine)) from exc
            return [str(p) for p in exc.problems]
        return []

    def discard(self) -> None:
        self.staged.clear()

    def diff(self) -> list[tuple[str, Any, Any]]:
        """(key, current, staged) for every key the staged changes alter; secrets are not shown."""
        _, doc = self.current_doc()
        old, new = flatten(doc), flatten(self.staged_doc())
        return [(k, _shown(k, old.get(k)), _shown(k, new.get(k), changed=k in old))
                for k in _changed(old, new)]

    def apply(self) -> Applied:
        if not self.staged:
            raise EditError("nothing_staged", "nothing staged: use `config set KEY VALUE` first")
        raw, doc = self.current_doc()
        new_doc = self.staged_doc()
        keys = _changed(flatten(doc), flatten(new_doc))
        for key in keys:  # the allow-list again, on what actually changes
            allowed, code, why = check_key(key)
            if not allowed:
                raise EditError(code, f"refused: {why}")
        self._refuse_new_file_problems(doc, new_doc)
        applied = self._write(raw, new_doc, keys, keep_history=True)
        self.staged.clear()
        return applied

    def _refuse_new_file_problems(self, old_doc: dict, new_doc: dict) -> None:
        if self.file_checks is None:
            return
        try:
            before = {str(p) for p in self.file_checks(self.validate(old_doc))}
        except ConfigError:
            before = set()
        added = [str(p) for p in self.file_checks(self.validate(new_doc)) if str(p) not in before]
        if added:
            raise EditError("invalid", "not applied, the unit could not start with it: " + "; ".join(added))

    def rollback(self) -> Applied:
        """Restore the device settings of the newest saved version; every other key stays as it is now."""
        versions = self.history()
        if not versions:
            raise EditError("no_history", "no earlier version to roll back to")
        previous = versions[-1]
        try:
            old_doc = tomllib.loads(previous.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise EditError("invalid", f"saved version {previous.name} is unreadable: {exc}") from exc
        raw, doc = self.current_doc()
        current, wanted = flatten(doc), flatten(old_doc)
        new_doc = copy.deepcopy(doc)
        keys = []
        for key in _changed(current, wanted):
            if not check_key(key)[0]:
                continue  # never restored: policy, trusted keys, hotlists, audit, console security
            keys.append(key)
            if key in wanted:
                set_path(new_doc, key, wanted[key])
            else:
                remove_path(new_doc, key)
        applied = self._write(raw, new_doc, keys, keep_history=False)
        previous.unlink()
        self.staged.clear()
        return applied

    def set_password_hash(self, password_hash: str) -> Applied:
        """Write console.password_hash (the `passwd` and first-login path, not `config set`)."""
        raw, doc = self.current_doc()
        doc.setdefault("console", {})["password_hash"] = password_hash
        return self._write(raw, doc, ["console.password_hash"], keep_history=False)

    def history(self) -> list[Path]:
        if not self.history_dir.is_dir():
            return []
        return sorted(self.history_dir.glob("*.toml"))

    def _write(self, old_raw: bytes, doc: dict, keys: list[str], keep_history: bool) -> Applied:
        text = toml_out.dumps(doc)
        try:
            self.validate(doc)
        except ConfigError as exc:
            raise EditError("invalid", "; ".join(str(p) for p in exc.problems)) from exc
        if keep_history:
            self.history_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            write_atomic(self.history_dir / f"{stamp}-{len(self.history()):04d}.toml", old_raw, mode=0o600)
            for old in self.history()[:-HISTORY_KEEP]:
                old.unlink()
        write_atomic(self.path, text.encode("utf-8"))
        return Applied(keys=keys, old_digest=_digest(old_raw), new_digest=_digest(text.encode("utf-8")))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _same_entry(problem_path: str, key: str) -> bool:
    """A problem reported on the destination entry (mqtt.destinations[2]) for a key inside it."""
    return key.startswith("mqtt.destinations.") and problem_path.startswith("mqtt.destinations[") and \
        problem_path.count(".") <= 2


def _plain(config: Any) -> Any:
    if dataclasses.is_dataclass(config):
        return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple):
        return [_plain(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


def _shown(key: str, value: Any, changed: bool = False) -> Any:
    if value is not None and is_secret(key):
        return "*** (changed)" if changed else "*** (set)"
    return value
