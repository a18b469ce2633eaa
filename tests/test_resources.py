"""The models and default config shipped with the package are found by default; explicit wins."""
from __future__ import annotations

from pathlib import Path

from agent.config.loader import load_config, parse_config
from agent.resources import bundled_models_dir, default_config_path

ROOT = Path(__file__).resolve().parents[1]


def test_in_a_checkout_the_bundled_files_are_the_checkouts():
    assert bundled_models_dir() == ROOT / "models"
    assert (bundled_models_dir() / "manifest.json").is_file()
    assert default_config_path() == ROOT / "firmware_config" / "plategate.toml"


def test_no_models_dir_means_the_bundled_models():
    config = parse_config("[source]\npath = \"clip.mp4\"\n", base_dir=Path("/srv/unit"))
    assert config.recognizer.models_dir is None
    assert config.recognizer.models_path == bundled_models_dir()


def test_an_explicit_models_dir_wins(tmp_path):
    path = tmp_path / "unit.toml"
    path.write_text("[source]\npath = \"clip.mp4\"\n[recognizer]\nmodels_dir = \"my-models\"\n")
    assert load_config(path).recognizer.models_path == tmp_path / "my-models"


def test_the_shipped_default_config_uses_the_bundled_models_and_the_installed_unit_key():
    config = load_config(default_config_path())
    assert config.recognizer.models_path == bundled_models_dir()
    assert config.audit.unit_key == Path("/etc/plategate/keys/unit.key")
    assert config.unit.state_dir == Path("/var/lib/plategate")
