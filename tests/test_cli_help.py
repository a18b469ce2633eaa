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
