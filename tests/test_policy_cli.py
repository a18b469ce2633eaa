"""`plategate keygen` and `plategate policy sign|verify|check|explain`: outputs and exit codes."""
from __future__ import annotations

import json
import stat
from pathlib import Path

from agent.cli import main

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"
DEPT_PUB = str(POLICIES / "test-keys" / "department-TEST-ONLY.pub")
NOW = "2027-01-15T08:00:00Z"


def test_keygen_sign_verify(tmp_path, capsys) -> None:
    prefix = tmp_path / "dept"
    assert main(["keygen", "--out", str(prefix)]) == 0
    out = capsys.readouterr().out
    kid = out.split()[2]
    assert len(kid) == 16
    assert stat.S_IMODE((tmp_path / "dept.key").stat().st_mode) == 0o600
    assert main(["keygen", "--out", str(prefix)]) == 2  # never overwrite silently
    bundle = tmp_path / "p.bundle"
    assert main(["policy", "sign", str(POLICIES / "demo.json"), "--key", str(tmp_path / "dept.key"),
                 "--out", str(bundle)]) == 0
    assert main(["policy", "verify", str(bundle), "--trusted", str(tmp_path / "dept.pub"), "--now", NOW]) == 0
    assert kid in capsys.readouterr().out
    # the example department key is not trusted for this bundle
    assert main(["policy", "verify", str(bundle), "--trusted", DEPT_PUB, "--now", NOW]) == 2
    assert "unknown_signer" in capsys.readouterr().err
    assert main(["policy", "verify", str(bundle), "--trusted", str(tmp_path / "dept.pub"), "--now", NOW,
                 "--active-version", "1"]) == 2
    assert "rollback" in capsys.readouterr().err


def test_sign_refuses_invalid_policy(tmp_path, capsys) -> None:
    doc = json.loads((POLICIES / "demo.json").read_text())
    doc["destinations"][0]["class"] = "feds"
    src = tmp_path / "bad.json"
    src.write_text(json.dumps(doc))
    assert main(["policy", "sign", str(src), "--key", str(POLICIES / "test-keys" / "department-TEST-ONLY.key"),
                 "--out", str(tmp_path / "b")]) == 2
    assert "destinations[0].class" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_check_examples_clean_and_lint_findings(tmp_path, capsys) -> None:
    for name in ("ct-trust-act", "ca-sb34", "il-2023", "strict-hits-only", "demo"):
        assert main(["policy", "check", str(POLICIES / f"{name}.bundle"), "--now", NOW]) == 0, name
    capsys.readouterr()
    assert main(["policy", "check", str(POLICIES / "demo.json"), "--now", NOW, "--strict"]) == 2
    out = capsys.readouterr().out
    assert "rule 'ice-all' is shadowed: class federal_immigration is prohibited" in out
    doc = json.loads((POLICIES / "ct-trust-act.json").read_text())
    doc["destinations"][1]["transport"] = {"broker_url": "mqtt://ctic.example.gov:1883", "topic": "t"}
    doc["destinations"][0]["purposes"].append("stolen_vehicles")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert main(["policy", "check", str(bad), "--now", NOW]) == 2
    assert "did you mean 'stolen_vehicle'" in capsys.readouterr().out
    doc["destinations"][0]["purposes"].pop()
    bad.write_text(json.dumps(doc))
    assert main(["policy", "check", str(bad), "--now", NOW]) == 2
    out = capsys.readouterr().out
    assert "error: destinations[1].transport: mqtt://ctic.example.gov:1883 is plain MQTT" in out
    assert main(["policy", "check", str(POLICIES / "demo.json"), "--now", "2037-01-01T00:00:00Z"]) == 2
    assert "expired" in capsys.readouterr().out


def test_explain(tmp_path, capsys) -> None:
    read = tmp_path / "read.json"
    read.write_text(json.dumps({"plate": "ABC1234", "confidence": 0.9, "seen_at": NOW, "camera_id": "cam-1",
                                "hits": [{"list_id": "ct-stolen", "purpose": "stolen_vehicle"}]}))
    assert main(["policy", "explain", str(POLICIES / "demo.bundle"), str(read), "--json"]) == 0
    rows = {r["destination"]: r for r in json.loads(capsys.readouterr().out)["decisions"]}
    assert rows["county-records"]["allowed"] and rows["county-records"]["hit_purposes"] == ["stolen_vehicle"]
    assert rows["ice-era"]["rule_id"] == "prohibition:class:federal_immigration"
    assert main(["policy", "explain", str(POLICIES / "ct-trust-act.json"), str(read),
                 "--now", "2027-01-15T10:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "ct-fusion-center" in out and "rule:ctic-hits:max-age" in out


def test_every_option_has_help() -> None:
    import argparse

    from agent.cli import build_parser

    def options(parser: argparse.ArgumentParser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from options(sub)
            elif action.dest != "help":
                yield parser.prog, action

    top = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for name in ("keygen", "policy", "audit"):
        for prog, action in options(top.choices[name]):
            assert action.help, f"{prog} {action.dest} has no help"
            checked += 1
    assert checked > 20


def test_check_and_explain_can_verify_the_signature(tmp_path, capsys) -> None:
    vendor_pub = str(POLICIES / "test-keys" / "vendor-TEST-ONLY.pub")
    bundle = str(POLICIES / "demo.bundle")
    assert main(["policy", "check", bundle, "--now", NOW, "--trusted", DEPT_PUB]) == 0
    assert main(["policy", "check", bundle, "--now", NOW, "--trusted", vendor_pub]) == 2
    assert "unknown_signer" in capsys.readouterr().out
    read = tmp_path / "read.json"
    read.write_text(json.dumps({"plate": "X1", "confidence": 0.9, "seen_at": NOW, "camera_id": "c"}))
    assert main(["policy", "explain", bundle, str(read), "--trusted", vendor_pub]) == 2
    assert main(["policy", "explain", bundle, str(read), "--trusted", DEPT_PUB]) == 0
