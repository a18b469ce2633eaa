"""The README's first command, end to end: real clip, real models, real broker, real agent process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mqtt_broker import find_mosquitto

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed (apt-get install mosquitto)")
def test_demo_prints_per_destination_summary_and_the_prohibited_one_is_empty(tmp_path):
    work = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--work", str(work),
                             "--clip-dir", str(tmp_path / "clip")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "prohibited destinations received nothing: YES" in result.stdout
    assert "prohibited destinations' brokers saw no connection from the unit: YES" in result.stdout
    full = json.loads((work / "summary.json").read_text())
    # The ice-era broker's own log: its one connection is the demo's observer, none the unit's.
    assert full["connections"]["ice-era"] == {**full["connections"]["ice-era"], "accepted": 1, "observer": 1,
                                              "unit_client_ids": []}
    assert any(c.endswith("-county-records") for c in full["connections"]["county-records"]["unit_client_ids"])
    summary = {d["id"]: d for d in full["destinations"]}
    assert summary["ice-era"]["received"] == []
    assert set(summary["ice-era"]["decisions"]) == {"denied by prohibition:class:federal_immigration"}
    assert summary["county-records"]["received"], "the allowed destination received nothing"
    truth = {p["text"] for p in json.loads((tmp_path / "clip" / "demo-7.mp4.json").read_text())["plates"]}
    assert set(summary["county-records"]["received"]) & truth, "no plate of the clip was read correctly"
