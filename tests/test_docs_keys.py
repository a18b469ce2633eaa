"""One source of truth for config keys: the docs name only keys the schema has.

Every `section.key` (in backticks) in README.md and docs/*.md whose section is a section of
the device config, or a name the docs once used as if it were one (`delivery`, `status`),
must resolve to a field of agent/config/schema.py (nested sections and lists of tables
included). Audit event names that look alike (`delivery.sent`, `outbox.full`) and file
names the code uses (`policy.highwater`: a string literal in agent/) and code references
(`recognizer.detection_crop`: a function of agent/vision/recognizer.py) are not keys.
"""
from __future__ import annotations

import ast
import dataclasses
import re
import typing
from pathlib import Path

from agent.config.schema import DeviceConfig
from agent.events import EVENTS

ROOT = Path(__file__).resolve().parents[1]
FAUX_SECTIONS = {"delivery", "status"}
# `unit.pub`, `audit.log`: file names, not keys.
FILE_SUFFIXES = {"pub", "key", "pem", "crt", "toml", "json", "jsonl", "log", "db", "sqlite",
                 "onnx", "md", "py", "sh", "service", "gz", "txt", "csv", "head"}
# section.key[.key...]; a `<name>` or `[]` part stands for an element of a list of tables.
TOKEN = re.compile(r"`([a-z_]+(?:\.(?:[a-z_0-9]+|<[a-z_]+>|\[\]))+)(?:\s*=\s*[^`]*)?`")


def _resolve(cls: type, parts: list[str]) -> bool:
    parts = [p for p in parts if not (p.startswith("<") or p == "[]")]
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return False
        hints = typing.get_type_hints(cls)
        if part not in {f.name for f in dataclasses.fields(cls)}:
            return False
        cls = hints[part]
        if typing.get_origin(cls) is tuple:              # a list of tables, e.g. destinations
            (cls, *_rest) = typing.get_args(cls)
        if i == len(parts) - 1:
            return True
    return False


def code_names() -> set[str]:
    """Names that are not config keys although they look alike: every string literal of
    agent/ (and its last path part: file and event names), and `module.name` for every
    top-level function, class and constant of a module (`recognizer.detection_crop`)."""
    names: set[str] = set()
    for path in (ROOT / "agent").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
                names.add(node.value.rsplit("/", 1)[-1])
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(f"{path.stem}.{node.name}")
            elif isinstance(node, ast.Assign):
                names.update(f"{path.stem}.{t.id}" for t in node.targets
                             if isinstance(t, ast.Name))
    return names


def doc_keys() -> list[tuple[str, int, str]]:
    sections = {f.name for f in dataclasses.fields(DeviceConfig)} | FAUX_SECTIONS
    not_keys = set(EVENTS) | code_names()
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in TOKEN.finditer(line):
                token = match.group(1)
                if (token.split(".")[0] in sections and token not in not_keys
                        and token.rsplit(".", 1)[-1] not in FILE_SUFFIXES):
                    found.append((path.relative_to(ROOT).as_posix(), number, token))
    return found


def test_docs_name_only_keys_the_schema_has():
    keys = doc_keys()
    assert len(keys) >= 10                      # the docs do name keys: the scan works
    missing = [f"{path}:{line}: `{token}`" for path, line, token in keys
               if not _resolve(DeviceConfig, token.split("."))]
    assert not missing, "keys the config schema lacks:\n" + "\n".join(missing)


def test_the_check_itself_catches_a_phantom_key():
    assert _resolve(DeviceConfig, ["mqtt", "status", "url"])
    assert _resolve(DeviceConfig, ["mqtt", "destinations", "username"])
    assert not _resolve(DeviceConfig, ["delivery", "outbox_path"])
    assert _resolve(DeviceConfig, ["mqtt", "destinations", "<dest_id>", "password"])
    assert not _resolve(DeviceConfig, ["outbox", "max_mb", "x"])
