"""Every command and every option of `plategate` says what it does in --help."""
from __future__ import annotations

import argparse
import subprocess
import sys

from agent.cli import build_parser


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, path + (name,))


def test_every_option_and_argument_has_help():
    missing = []
    commands = list(walk(build_parser()))
    assert len(commands) > 15
    for path, parser in commands:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"plategate {' '.join(path)} {choice.dest}")
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"plategate {' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_python_dash_m_agent_is_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "agent", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("run", "config", "recognize", "eval", "keygen", "policy", "audit"):
        assert command in result.stdout


def test_no_option_swallows_the_positional_arguments():
    """Regression (issue 14, item 9): `policy verify --trusted KEY BUNDLE` failed with "the
    following arguments are required: bundle", because --trusted took one or more values and
    ate the bundle. An option that takes several values must be repeatable instead."""
    greedy = [f"plategate {' '.join(path)} {'/'.join(action.option_strings)}"
              for path, parser in walk(build_parser()) for action in parser._actions
              if action.option_strings and action.nargs in ("+", "*", argparse.REMAINDER)]
    assert greedy == []


def test_trusted_is_repeatable_before_the_bundle(tmp_path, capsys):
    from pathlib import Path

    from agent.cli import main
    keys = Path(__file__).resolve().parents[1] / "firmware_config" / "policies" / "test-keys"
    bundle = tmp_path / "p.bundle"
    assert main(["policy", "sign", str(keys.parent / "demo.json"), "--key",
                 str(keys / "department-TEST-ONLY.key"), "--out", str(bundle)]) == 0
    now = ["--now", "2026-12-01T00:00:00Z"]
    assert main(["policy", "verify", "--trusted", str(keys / "department-TEST-ONLY.pub"), str(bundle),
                 *now]) == 0
    assert main(["policy", "verify", "--trusted", str(keys / "vendor-TEST-ONLY.pub"), "--trusted",
                 str(keys / "department-TEST-ONLY.pub"), str(bundle), *now]) == 0
    assert main(["policy", "verify", "--trusted", str(keys / "vendor-TEST-ONLY.pub"), str(bundle),
                 *now]) == 2
    assert main(["policy", "check", "--trusted", str(keys / "department-TEST-ONLY.pub"), str(bundle),
                 *now]) == 0
