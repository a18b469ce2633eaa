"""Dependency pins: the versions setup.cfg allows are the versions the tests ran with.

Regression (issue 14, item 8): setup.cfg allowed ``paho-mqtt>=2.0,<3``, but the delivery
code imports ``paho.mqtt._packet``, which paho 2.1 lacks, so a wheel install resolving to
2.1 could not even ``import agent.delivery.mqtt_link``.
"""
from __future__ import annotations

import configparser
import importlib
import re
from importlib.metadata import version
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def _requirement(name: str) -> str:
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    for line in cfg["options"]["install_requires"].splitlines():
        spec = line.split("#", 1)[0].strip()
        if re.match(rf"{re.escape(name)}\b", spec):
            return spec
    raise AssertionError(f"{name} is not in setup.cfg install_requires")


def test_paho_is_pinned_to_the_tested_version() -> None:
    spec = _requirement("paho-mqtt")
    pinned = re.fullmatch(r"paho-mqtt==([0-9.]+)", spec)
    assert pinned, f"paho-mqtt must be pinned exactly (the code uses a private module): {spec!r}"
    assert version("paho-mqtt") == pinned.group(1)
    importlib.import_module("agent.delivery.mqtt_link")  # the private module it needs is there
