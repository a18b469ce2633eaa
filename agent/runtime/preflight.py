"""The file checks `plategate config check` (the unit's ExecStartPre) and `plategate run` make
before the agent starts: every file and folder the config names exists and can be used.

Why here: the checks come from three packages (config: state dir, policy, audit and MQTT
files; capture: the source; vision: the models), and capture and vision read the config
package's schema, so the config package cannot fetch their checks without a cycle. The
runtime, which depends on all three, assembles the list and hands it to the config package's
machinery (agent/config/files.py).
"""
from __future__ import annotations

from pathlib import Path

from agent.capture.sources import source_readable
from agent.config.files import (FileCheck, audit_key_loadable, load_checked_config, mqtt_files_readable,
                                policy_files_readable, run_checks, state_dir_writable)
from agent.config.loader import Problem
from agent.config.schema import DeviceConfig
from agent.vision.models import models_match_manifest

FILE_CHECKS: tuple[FileCheck, ...] = (
    state_dir_writable,
    source_readable,
    models_match_manifest,
    policy_files_readable,
    audit_key_loadable,
    mqtt_files_readable,
)


def check_files(config: DeviceConfig) -> list[Problem]:
    """Every problem with a file or folder `config` names (empty when all are usable)."""
    return run_checks(config, FILE_CHECKS)


def load_usable_config(path: Path) -> DeviceConfig:
    """The config the agent can start with, or ConfigError listing every problem (schema first;
    files are checked only once the config is valid)."""
    return load_checked_config(path, FILE_CHECKS)
