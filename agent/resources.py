"""Where the files shipped with the package live: the ONNX models and the default device config.

Why: a unit installed from the wheel has no source checkout, so the models and the default
config travel inside the package (``agent/models/``, ``agent/defaults/``; setup.py maps the
checkout's ``models/`` and ``firmware_config/plategate.toml`` there). In a source checkout
(editable install, tests) those folders are absent from ``agent/`` and the checkout's own
``models/`` and ``firmware_config/`` are used, so both layouts find the same files.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent
DEFAULT_CONFIG_NAME = "plategate.toml"


def bundled_models_dir() -> Path:
    """The models folder shipped with the package (wheel) or, in a checkout, the checkout's."""
    packaged = PACKAGE_DIR / "models"
    if (packaged / "manifest.json").is_file():
        return packaged
    return CHECKOUT_DIR / "models"


def models_dir_arg(text: str) -> Path:
    """argparse type of a tool's ``--models``: a folder holding ``manifest.json``. A wrong
    folder is one usage line naming it, not a traceback from the first model load."""
    import argparse

    path = Path(text)
    if not (path / "manifest.json").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a models folder (no manifest.json in it; "
                                         f"the bundled models are in {bundled_models_dir()})")
    return path


def default_config_path() -> Path:
    """The production default device config (firmware_config/plategate.toml in the checkout)."""
    packaged = PACKAGE_DIR / "defaults" / DEFAULT_CONFIG_NAME
    if packaged.is_file():
        return packaged
    return CHECKOUT_DIR / "firmware_config" / DEFAULT_CONFIG_NAME
