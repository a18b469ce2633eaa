"""Check the files and folders a valid config names: they exist, can be read (or written, for the
state dir), and the models match their manifest.

Why apart from `loader.py`: loading a config is pure (it reads the one TOML file), so a
SIGHUP reload and `config show` never touch the disk beyond it. These checks do I/O on
purpose. `plategate config check` (the unit's ExecStartPre) and `plategate run` both call
`check_files`, so a config that names a missing model, key or video is refused before the
agent starts, with one line per problem naming its key path and file, instead of a
traceback that systemd would restart every few seconds forever.

This module holds the machinery and the checks of what the config package itself knows
(state dir, policy, audit and MQTT files). The checks of the camera source and of the models
belong to the capture and vision packages, which read this package's schema; so the full
list is assembled above both, in agent/runtime/preflight.py, and handed in here
(tests/test_import_graph.py: no package cycle).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from agent.config.loader import ConfigError, Problem, load_config
from agent.config.schema import DeviceConfig


def missing_or_unreadable(key: str, path: Path, what: str) -> Problem | None:
    """None if `path` is a regular file this process can open for reading."""
    if not path.exists():
        return Problem(key, f"{what} {path} does not exist")
    if not path.is_file():
        return Problem(key, f"{path} is not a file ({what} expected)")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return Problem(key, f"{what} {path} cannot be read: {exc.strerror}")
    return None


def readable_folder(key: str, path: Path, what: str) -> Problem | None:
    if not path.exists():
        return Problem(key, f"{what} {path} does not exist")
    if not path.is_dir():
        return Problem(key, f"{path} is not a folder ({what} expected)")
    try:
        os.listdir(path)
    except OSError as exc:
        return Problem(key, f"{what} {path} cannot be read: {exc.strerror}")
    return None


def _files(key: str, paths: Iterable[Path], what: str) -> list[Problem]:
    problems = []
    for i, path in enumerate(paths):
        problem = missing_or_unreadable(f"{key}[{i}]", Path(path), what)
        if problem:
            problems.append(problem)
    return problems


def _optional_file(key: str, path: Path | None, what: str) -> list[Problem]:
    if path is None:
        return []
    problem = missing_or_unreadable(key, Path(path), what)
    return [problem] if problem else []


# --- one small named check per area ------------------------------------------------------------

def state_dir_writable(config: DeviceConfig) -> list[Problem]:
    """The state dir (or, if it does not exist yet, the folder it would be created in) takes a file.

    Probed by creating and removing a temporary file: permission bits alone say nothing about
    a read-only mount (systemd's ProtectSystem) or a root process.
    """
    key, path = "unit.state_dir", Path(config.unit.state_dir)
    if path.exists() and not path.is_dir():
        return [Problem(key, f"{path} is not a folder")]
    target = path
    while not target.exists():
        target = target.parent
    if not target.is_dir():
        return [Problem(key, f"{path} cannot be created: {target} is not a folder")]
    try:
        with tempfile.TemporaryFile(dir=target, prefix=".plategate-check-"):
            pass
    except OSError as exc:
        where = "" if target == path else f" (it would be created in {target})"
        return [Problem(key, f"state dir {path} is not writable{where}: {exc.strerror}")]
    return []


def _loadable(key: str, path: Path | None, what: str, load: Callable[[Path], object]) -> list[Problem]:
    """A readable file that `load` accepts (it raises OSError or ValueError, e.g. PolicyError,
    saying why not); None: not configured, nothing to check."""
    missing = _optional_file(key, path, what)
    if missing or path is None:
        return missing
    try:
        load(Path(path))
    except (OSError, ValueError) as exc:
        return [Problem(key, f"{what} {path} cannot be used: {exc}")]
    return []


def policy_files_readable(config: DeviceConfig) -> list[Problem]:
    """The bundle and hotlists can be read; trusted keys load as public keys; HMAC keys load as
    the agent loads them (agent.policy.keyring)."""
    from agent.policy.keyring import load_hmac_keys
    from agent.policy.signing import load_public_key

    policy = config.policy
    problems = _optional_file("policy.bundle", policy.bundle, "policy bundle")
    for i, path in enumerate(policy.trusted_keys):
        problems += _loadable(f"policy.trusted_keys[{i}]", path, "trusted key", load_public_key)
    problems += _files("policy.hotlists", policy.hotlists, "hotlist bundle")
    return problems + _loadable("policy.hmac_keys", policy.hmac_keys, "HMAC key file", load_hmac_keys)


def audit_key_loadable(config: DeviceConfig) -> list[Problem]:
    from agent.policy.signing import load_private_key

    return _loadable("audit.unit_key", config.audit.unit_key, "unit key", load_private_key)


def mqtt_files_readable(config: DeviceConfig) -> list[Problem]:
    problems = []
    for i, dest in enumerate(config.mqtt.destinations):
        problems += _optional_file(f"mqtt.destinations[{i}].client_cert", dest.client_cert,
                                   "client certificate")
        problems += _optional_file(f"mqtt.destinations[{i}].client_key", dest.client_key, "client key")
    problems += _optional_file("mqtt.status.ca_file", config.mqtt.status.ca_file, "CA certificate")
    return problems


FileCheck = Callable[[DeviceConfig], list[Problem]]


def run_checks(config: DeviceConfig, checks: Iterable[FileCheck]) -> list[Problem]:
    """Every problem the `checks` find with the files and folders `config` names (empty when all
    are usable)."""
    problems: list[Problem] = []
    for check in checks:
        problems.extend(check(config))
    return problems


def load_checked_config(path: Path, checks: Iterable[FileCheck]) -> DeviceConfig:
    """`load_config`, then `run_checks`: the config the agent can start with, or ConfigError
    listing every problem (schema first; files are checked only once the config is valid)."""
    config = load_config(path)
    problems = run_checks(config, checks)
    if problems:
        raise ConfigError(str(path), problems)
    return config
