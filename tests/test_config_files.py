"""`config check` and `plategate run` check every file and folder the config names.

Regression (issue 14, item 5): a missing model, a missing trusted key, an unreadable video or
an unwritable state dir passed `config check` (the unit's ExecStartPre), then `plategate run`
died with a raw traceback and exit 70, which systemd's Restart=on-failure repeated every 5 s
forever. Now each is a problem naming its key path and file: `config check` exits 2 and
`plategate run` exits 78 (EX_CONFIG, which the unit file does not restart).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from agent.capture.sources import source_readable
from agent.config.files import audit_key_loadable, policy_files_readable, state_dir_writable
from agent.runtime.preflight import check_files
from agent.vision.models import models_match_manifest
from agent.config.loader import load_config

ROOT = Path(__file__).resolve().parents[1]
KEYS = ROOT / "firmware_config" / "policies" / "test-keys"


def write_config(tmp_path: Path, **overrides: str) -> Path:
    """A usable config (every file it names exists); `overrides` replace a key's TOML value."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded by the check")
    values = {"state_dir": f'"{tmp_path / "state"}"', "path": f'"{clip}"',
              "models_dir": f'"{ROOT / "models"}"',
              "trusted_keys": f'["{KEYS / "department-TEST-ONLY.pub"}"]',
              "unit_key": f'"{KEYS / "unit-TEST-ONLY.key"}"'}
    values.update(overrides)
    config = tmp_path / "unit.toml"
    config.write_text(f"""
[unit]
state_dir = {values["state_dir"]}
[source]
kind = "video_file"
path = {values["path"]}
[recognizer]
models_dir = {values["models_dir"]}
[policy]
trusted_keys = {values["trusted_keys"]}
[audit]
unit_key = {values["unit_key"]}
""")
    return config


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_a_usable_config_has_no_file_problems(tmp_path):
    assert check_files(load_config(write_config(tmp_path))) == []
    assert run("config", "check", str(write_config(tmp_path))).returncode == 0


def test_missing_models_dir_config_check_exits_2_and_run_exits_78(tmp_path):
    """The issue's acceptance line: check names the key; run refuses with 78, no traceback."""
    missing = tmp_path / "no-models"
    config = write_config(tmp_path, models_dir=f'"{missing}"')
    check = run("config", "check", str(config))
    assert check.returncode == 2
    assert f"recognizer.models_dir: models folder {missing} does not exist" in check.stderr
    agent = run("run", "--config", str(config))
    assert agent.returncode == 78, agent.stderr
    assert "Traceback" not in agent.stderr
    assert agent.stderr.splitlines() == [
        f"plategate: refusing to start: {config}: recognizer.models_dir: models folder {missing} "
        "does not exist"]
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_every_problem_is_one_line_naming_key_and_file(tmp_path):
    config = write_config(tmp_path, path=f'"{tmp_path / "gone.mp4"}"',
                          trusted_keys=f'["{tmp_path / "dept.pub"}"]', unit_key=f'"{tmp_path}"')
    agent = run("run", "--config", str(config))
    assert agent.returncode == 78 and "Traceback" not in agent.stderr
    lines = agent.stderr.splitlines()
    assert len(lines) == 3, lines
    assert f"source.path: video file {tmp_path / 'gone.mp4'} does not exist" in lines[0]
    assert f"policy.trusted_keys[0]: trusted key {tmp_path / 'dept.pub'} does not exist" in lines[1]
    assert f"audit.unit_key: {tmp_path} is not a file" in lines[2]


def test_invalid_schema_is_also_exit_78_for_run(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text() + "[outbox]\nmax_mb = -5\n")
    agent = run("run", "--config", str(config))
    assert agent.returncode == 78 and "outbox.max_mb: -5" in agent.stderr
    assert "Traceback" not in agent.stderr


def test_models_must_match_the_manifest(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models)
    manifest = json.loads((models / "manifest.json").read_text())
    ocr_file = models / manifest["models"]["plate_ocr"]["file"]
    ocr_file.write_bytes(ocr_file.read_bytes()[:-1] + b"\0")
    (models / manifest["models"]["plate_detector"]["file"]).unlink()
    config = load_config(write_config(tmp_path, models_dir=f'"{models}"'))
    problems = [str(p) for p in models_match_manifest(config)]
    assert problems == [
        f"recognizer.models_dir: model file (model 'plate_detector') {models / 'plate_detector.onnx'} "
        "does not exist",
        f"recognizer.models_dir: model file {ocr_file} does not match its manifest (sha256 differs: "
        "corrupt or replaced file)"]
    (models / "manifest.json").write_text("{")
    assert "is not valid JSON" in str(models_match_manifest(config)[0])


def test_state_dir_must_be_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = load_config(write_config(tmp_path, state_dir=f'"{blocker / "state"}"'))
    assert [str(p) for p in state_dir_writable(config)] == [
        f"unit.state_dir: {blocker / 'state'} cannot be created: {blocker} is not a folder"]
    if os.geteuid() == 0:   # root writes through permission bits; /sys is a read-only filesystem
        readonly = Path("/sys/plategate-state")
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        readonly = tmp_path / "ro" / "state"
    config = load_config(write_config(tmp_path, state_dir=f'"{readonly}"'))
    problems = [str(p) for p in state_dir_writable(config)]
    assert len(problems) == 1 and problems[0].startswith(f"unit.state_dir: state dir {readonly} is "
                                                         f"not writable (it would be created in")


def test_image_folder_source_must_be_a_folder(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('kind = "video_file"', 'kind = "image_folder"'))
    problems = [str(p) for p in source_readable(load_config(config))]
    assert problems == [f"source.path: {tmp_path / 'clip.mp4'} is not a folder (image folder expected)"]


def test_keys_must_load(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    config = load_config(write_config(tmp_path, trusted_keys=f'["{bad}"]', unit_key=f'"{bad}"'))
    assert [p.path for p in policy_files_readable(config)] == ["policy.trusted_keys[0]"]
    assert f"trusted key {bad} cannot be used" in str(policy_files_readable(config)[0])
    assert [p.path for p in audit_key_loadable(config)] == ["audit.unit_key"]
    hmac = tmp_path / "hmac.toml"
    hmac.write_text('city = "not hex"\n')
    config = load_config(write_config(tmp_path, trusted_keys="[]"))
    config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, hmac_keys=hmac))
    problems = [str(p) for p in policy_files_readable(config)]
    assert len(problems) == 1 and problems[0].startswith(f"policy.hmac_keys: HMAC key file {hmac} cannot "
                                                         "be used: ") and "'city'" in problems[0]


def test_unit_file_does_not_restart_on_exit_78():
    unit = (ROOT / "systemd" / "plategate.service").read_text()
    assert "RestartPreventExitStatus=78" in unit.splitlines()
