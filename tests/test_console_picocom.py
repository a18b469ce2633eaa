"""A person at a plain terminal program can use the console without our client.

picocom (Debian's serial terminal) runs under a pty driven by pexpect, on the client end of
the pty cable; the console sees what a technician's keystrokes send: characters, Enter as
CR, Backspace as DEL.
"""
from __future__ import annotations

import shutil

import pytest

from console_rig import PASSWORD, Bench

pexpect = pytest.importorskip("pexpect")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("picocom") is None,
                                 reason="picocom is not installed (tools/install_system_deps.sh installs it)")]


def test_a_technician_at_picocom_logs_in_reads_status_and_edits_config(tmp_path, mosquitto, dept):
    bench = Bench(tmp_path, mosquitto, dept)
    bench.write_config()
    bench.start_agent()
    bench.start_console()
    term = None
    try:
        client = bench.client("setup")  # sets the password, then leaves the line
        client.link.request("logout")
        client.link.port.write(b"mode text\r")  # as a person finds it: text mode, logged out
        client.link.port.flush()
        client.link.port.close()
        term = pexpect.spawn("picocom", ["-q", "-b", "115200", "--nolock", bench.cable.client_port],
                             encoding="utf-8", codec_errors="replace", timeout=15)
        term.send("\r")
        term.expect("plategate> ")
        term.send("help\r")
        term.expect("camera snapshot")
        term.expect("plategate> ")
        term.send("login tech-9\r")
        term.expect("Password: ")
        term.send(PASSWORD + "\r")
        term.expect("logged in as tech-9")
        term.expect("plategate tech-9> ")
        assert PASSWORD not in term.before  # never echoed
        term.send("statux\x7fs\r")  # a typo corrected with Backspace
        term.expect("health: ok")
        term.expect("plategate tech-9> ")
        term.send("config set source.fps 12\r")
        term.expect("staged source.fps = 12")
        term.send("config diff\r")
        term.expect("source.fps: 20 -> 12")
        term.send("config set mqtt.status.password hunter2secret\r")  # a secret typed inline: echoed as *
        term.expect("staged mqtt.status.password = \\*\\*\\*")
        assert "hunter2secret" not in term.before and "*************" in term.before
        term.send("config set mqtt.destinations.county.password\r")  # or asked for, unseen
        term.expect("mqtt.destinations.county.password \\(not shown\\): ")
        term.send("s3cret-value\r")
        term.expect("staged mqtt.destinations.county.password = \\*\\*\\*")
        assert "s3cret-value" not in term.before
        term.send("config set policy.bundle /tmp/x\r")
        term.expect("error: refused: policy.bundle: part of the sharing policy")
        term.send("logout\r")
        term.expect("logged out tech-9")
        term.sendcontrol("a")
        term.sendcontrol("x")
        term.expect(pexpect.EOF)
    finally:
        if term is not None and term.isalive():
            term.terminate(force=True)
        bench.close()
    bench.wait_audit("console.login", lambda r: r["fields"]["technician"] == "tech-9")
    bench.wait_audit("console.refused", lambda r: r["fields"].get("key") == "policy.bundle")
