"""`plategate-serial` one-shot commands as a script uses them: exit codes and outputs; idle logout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import cv2
import pytest

from console_rig import PASSWORD, ROOT, Bench, running_bench

pytestmark = pytest.mark.integration


@pytest.fixture
def bench(tmp_path, mosquitto, dept):
    with running_bench(tmp_path, mosquitto, dept, idle_timeout_s=2) as bench:
        yield bench


def serial(bench: Bench, *args: str, password: str | None = PASSWORD) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PLATEGATE_SERIAL_PASSWORD"}
    if password is not None:
        env["PLATEGATE_SERIAL_PASSWORD"] = password
    return subprocess.run([sys.executable, "-c", "from agent.console.client import main; raise SystemExit(main())",
                           bench.cable.client_port, "--tech", "tech-2", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)


def test_one_shot_commands_and_their_exit_codes(bench, tmp_path):
    status = serial(bench, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["health"] == "ok"

    out = tmp_path / "aim.jpg"
    snap = serial(bench, "snapshot", str(out))
    assert snap.returncode == 0, snap.stderr
    assert cv2.imread(str(out)).shape[1] == 640

    applied = serial(bench, "config", "set", "source.fps", "15", "--apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert tomllib.loads(bench.config_path.read_text())["source"]["fps"] == 15

    refused = serial(bench, "config", "set", "policy.bundle", "/tmp/x.bundle")
    assert refused.returncode == 1 and "refused" in refused.stdout

    invalid = serial(bench, "config", "set", "source.fps", "500")
    assert invalid.returncode == 1 and "source.fps" in invalid.stdout and "frame rate" in invalid.stdout

    assert serial(bench, "logout").returncode == 0
    wrong = serial(bench, "status", password="not the password")
    assert wrong.returncode == 3 and "wrong password" in wrong.stderr

    # the client left the console in text mode, for a person at a plain terminal
    from agent.console.port import open_port
    port = open_port(bench.cable.client_port, 115200, timeout=0.5)
    try:
        port.write(b"whoami\r")
        seen = b""
        for _ in range(20):
            seen += port.read(4096)
            if b"plategate> " in seen.split(b"whoami", 1)[-1]:
                break
        assert b"not logged in" in seen and b'"ok"' not in seen, seen
    finally:
        port.close()

    missing = subprocess.run([sys.executable, "-c", "from agent.console.client import main; raise SystemExit(main())",
                              "/dev/ttyUSB-none", "status"], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 3 and "no serial port /dev/ttyUSB-none" in missing.stderr


def test_idle_session_is_logged_out(bench):
    client = bench.client("tech-6")
    assert client.link.request("whoami")["technician"] == "tech-6"
    bench.wait_audit("console.logout", lambda r: r["fields"]["reason"] == "idle", timeout=15)
    assert client.link.request("whoami")["technician"] is None
    assert not client.link.request("status")["ok"]


def test_interactive_client_completes_commands_and_keys_in_colour(bench):
    pexpect = pytest.importorskip("pexpect")
    env = dict(os.environ, PLATEGATE_SERIAL_PASSWORD=PASSWORD, HOME=str(bench.tmp), TERM="xterm")
    env.pop("NO_COLOR", None)
    term = pexpect.spawn(sys.executable, ["-c", "from agent.console.client import main; raise SystemExit(main())",
                                          bench.cable.client_port, "--tech", "tech-11"],
                         cwd=str(ROOT), env=env, encoding="utf-8", timeout=30)
    try:
        term.expect("connected")
        term.expect("plategate> ")
        term.send("stat\t")  # completes to `status`
        term.expect("status")
        term.send("\r")
        term.expect("\x1b\\[32mok\x1b\\[0m")  # ok in green on a terminal
        term.expect("health: ok")
        term.expect("plategate> ")
        term.send("config set source.fp\t")  # config keys complete too
        term.expect("source.fps")
        term.send(" 14\r")
        term.expect("staged source.fps = 14")
        term.expect("plategate> ")
        term.send("config set policy.bundle /tmp/x\r")
        term.expect("\x1b\\[31merror\x1b\\[0m: refused")
        term.expect("plategate> ")
        term.send(f"snapshot {bench.tmp / 'aim.jpg'}\r")
        term.expect(r"snapshot \[#+ *\] +100%")  # the progress bar, on a terminal
        term.expect("saved")
        term.expect("plategate> ")
        term.send("quit\r")
        term.expect(pexpect.EOF)
    finally:
        if term.isalive():
            term.terminate(force=True)
    assert (bench.tmp / ".plategate_serial_history").read_text().count("config set") == 2
    bench.wait_audit("console.logout", lambda r: r["fields"]["technician"] == "tech-11")
