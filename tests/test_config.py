"""Device config: every problem reported with its key path; unknown keys refused; atomic writes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config.loader import (ConfigError, backoff_bounds_ordered, client_cert_has_key,
                                 load_config, parse_config, write_config_atomically)
from agent.config.reference import REDACTED, redacted, reference_markdown

ROOT = Path(__file__).resolve().parents[1]

FIVE_MISTAKES = """
[unit]
id = "unit 7"                 # 1: space not allowed
[source]
kind = "video_file"
path = "clip.mp4"
fsp = 12                      # 2: typo for fps
[outbox]
max_mb = "lots"               # 3: wrong type
[[mqtt.destinations]]
id = "county"
[[mqtt.destinations]]
id = "state"
protocol = "4"                # 4: not a protocol
[mqtt.status]
url = "http://broker:70000"   # 5: not an MQTT URL
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=Path("/tmp"))
    return [str(p) for p in info.value.problems]


def test_five_mistakes_all_reported_with_key_paths():
    problems = problems_of(FIVE_MISTAKES)
    assert len(problems) == 5, problems
    assert any(p.startswith("unit.id: ") for p in problems)
    assert "source.fsp: unknown key (did you mean 'fps'?)" in problems
    assert any(p.startswith("outbox.max_mb: expected a number") for p in problems)
    assert any(p.startswith("mqtt.destinations[1].protocol: '4' is not one of") for p in problems)
    assert "mqtt.status.url: 'http://broker:70000' is not an mqtt:// or mqtts:// URL" in problems


def test_check_command_exit_code_2_and_lists_every_problem(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(FIVE_MISTAKES)
    result = subprocess.run([sys.executable, "-m", "agent", "config", "check", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "5 problem(s)" in result.stderr
    assert "mqtt.status.url: 'http://broker:70000' is not an mqtt:// or mqtts:// URL" in result.stderr


def test_check_command_accepts_shipped_defaults(tmp_path):
    """The shipped config passes `config check` on an installed unit: its absolute paths are
    moved under tmp_path, where the files an install provides are put."""
    root = tmp_path / "root"
    text = (ROOT / "firmware_config" / "plategate.toml").read_text()
    for prefix in ("/etc/", "/var/", "/usr/", "/opt/"):   # not /dev/: the console port stays a device
        text = text.replace(f'"{prefix}', f'"{root}{prefix}')
    config = root / "etc" / "plategate" / "plategate.toml"
    keys = ROOT / "firmware_config" / "policies" / "test-keys"
    installed = {"etc/plategate/policy.bundle": ROOT / "firmware_config" / "policies" / "demo.bundle",
                 "etc/plategate/keys/department.pub": keys / "department-TEST-ONLY.pub",
                 "etc/plategate/keys/unit.key": keys / "unit-TEST-ONLY.key",
                 "var/lib/plategate/replay.mp4": ROOT / "firmware_config" / "policies" / "demo.json"}
    for where, what in installed.items():
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).symlink_to(what)
    config.write_text(text)
    result = subprocess.run([sys.executable, "-m", "agent", "config", "check", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert parse_config(text).policy.hmac_keys is None  # optional; naming a missing file is refused
    assert parse_config(text).recognizer.models_dir is None  # the models shipped with the package


def test_ranges_are_explained():
    assert problems_of('[source]\npath = "a"\nfps = 500\n') == [
        "source.fps: 500.0 is not a usable frame rate (0.1-120)"]
    assert problems_of('[unit]\nlatitude = 91\nlongitude = 1\n[source]\npath = "a"\n') == [
        "unit.latitude: 91.0 is not a latitude (-90 to 90)"]


def test_unknown_section_is_an_error_not_a_default():
    assert problems_of('[sorce]\nkind = "video_file"\n') == ["sorce: unknown key (did you mean 'source'?)"]


def test_invalid_toml_names_the_line():
    problems = problems_of("[unit\nid = 1\n")
    assert len(problems) == 1 and "not valid TOML" in problems[0] and "line 1" in problems[0]


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    config = tmp_path / "unit.toml"
    config.write_text('[source]\npath = "clips/a.mp4"\n')
    assert load_config(config).source.path == tmp_path / "clips" / "a.mp4"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "nope.toml")


def test_cross_field_rules_are_named_and_testable_alone():
    config = parse_config('[source]\npath = "a.mp4"\n', base_dir=Path("/tmp"))
    assert backoff_bounds_ordered(config) == []
    assert client_cert_has_key(config) == []
    problems = problems_of('[source]\npath = "a.mp4"\n[supervisor]\nbackoff_initial_s = 5\nbackoff_max_s = 1\n')
    assert problems == ["supervisor.backoff_initial_s: 5.0 is larger than supervisor.backoff_max_s (1.0)"]


@pytest.mark.parametrize("url", ["mqtt://10.0.0.5:1883", "mqtt://status.example.org",
                                 "mqtt://localhost:1883", "mqtt://0x7f000001:1883"])
def test_a_plain_status_link_is_refused_unless_it_stays_on_the_unit(url):
    """The status link carries the unit's state and its MQTT password: in clear only to a
    127.x literal (a name could be pointed elsewhere by DNS or /etc/hosts)."""
    problems = problems_of(f'[source]\npath = "a"\n[mqtt.status]\nurl = "{url}"\npassword = "pw"\n')
    assert len(problems) == 1 and problems[0].startswith(f"mqtt.status.url: '{url}' would send "
                                                         "the unit's status and password in clear")
    for allowed in ("mqtt://127.0.0.1:1883", "mqtts://status.example.org:8883"):
        parse_config(f'[source]\npath = "a"\n[mqtt.status]\nurl = "{allowed}"\n', base_dir=Path("/tmp"))


def test_a_status_publisher_never_opens_a_plain_link_off_the_unit():
    """Refused by code at the link too, whatever config reached it."""
    import threading

    from agent.delivery.status import BrokerSettings, StatusPublisher
    broker = BrokerSettings(url="mqtt://10.0.0.5:1883")
    with pytest.raises(ValueError, match="plain mqtt:// only to a loopback address"):
        StatusPublisher(broker, "unit-1", "plategate", dict, threading.Event(), 30.0)


def test_plate_size_range_must_be_ordered():
    assert problems_of('[source]\npath = "a"\n[recognizer]\nmin_plate_px = 500\n') == [
        "recognizer.min_plate_px: 500 is not smaller than recognizer.max_plate_px (400)"]


def test_secrets_are_redacted():
    config = parse_config('[source]\npath = "a.mp4"\n[[mqtt.destinations]]\nid = "x"\npassword = "hunter2"\n',
                          base_dir=Path("/tmp"))
    shown = redacted(config)
    assert shown["mqtt"]["destinations"][0]["password"] == REDACTED
    assert "hunter2" not in repr(shown)


def test_atomic_write_refuses_invalid_config_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "unit.toml"
    path.write_text('[source]\npath = "a.mp4"\n')
    with pytest.raises(ConfigError):
        write_config_atomically(path, '[source]\npath = "a.mp4"\nfps = 0\n')
    assert path.read_text() == '[source]\npath = "a.mp4"\n'
    write_config_atomically(path, '[source]\npath = "b.mp4"\n')
    assert load_config(path).source.path == tmp_path / "b.mp4"
    assert [p.name for p in tmp_path.iterdir()] == ["unit.toml"]  # no temp file left behind


def test_readme_config_reference_is_in_step_with_the_schema():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", readme, re.S)
    assert match, "README lacks the generated config reference block"
    assert match.group(1) == reference_markdown(), \
        "README config reference is stale: run `python tools/sync_config_reference.py`"


def test_region_hint_is_one_of_the_format_regions():
    config = parse_config('[source]\npath = "a"\n[recognizer]\nregion = "BR"\n', base_dir=Path("/tmp"))
    assert config.recognizer.region == "BR"
    assert parse_config('[source]\npath = "a"\n', base_dir=Path("/tmp")).recognizer.region is None
    for wrong in ("Brasil", "FL", "US-XX"):
        problems = problems_of(f'[source]\npath = "a"\n[recognizer]\nregion = "{wrong}"\n')
        assert len(problems) == 1 and problems[0].startswith(
            f"recognizer.region: {wrong!r} is not a region"), problems


def test_region_hint_may_name_a_us_state():
    config = parse_config('[source]\npath = "a"\n[recognizer]\nregion = "US-FL"\n',
                          base_dir=Path("/tmp"))
    assert config.recognizer.region == "US-FL"
