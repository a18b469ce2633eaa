"""The console's parts alone: line reader, password and lockout, the config allow-list and editor,
transfers, the TOML writer, and the agent's control server under bad requests."""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import tomllib
import zlib
from pathlib import Path

import pytest

from agent.config import toml_out
from agent.console.auth import Lockout, hash_password, password_problem, verify_password
from agent.console.lines import LineReader
from agent.console.settings import ConfigEditor, EditError, check_key, settable_keys
from agent.console.transfers import TransferError, Transfers
from agent.control.protocol import ControlClient, encode
from agent.control.server import ControlServer

ROOT = Path(__file__).resolve().parents[1]


# --- lines --------------------------------------------------------------------------------------------

def test_line_reader_edits_and_survives_garbage():
    reader = LineReader(max_chars=20)
    lines, _ = reader.feed(b"stat")
    assert lines == [] and reader.partial
    lines, _ = reader.feed(b"ux\x7fs\r\n")
    assert [l.text for l in lines] == ["status"]  # CRLF is one line end; DEL erased the x
    lines, _ = reader.feed(b"config se\x03")
    assert lines[0].cancelled and not reader.partial
    lines, _ = reader.feed(b"x" * 100 + b"\rhelp\r")
    assert lines[0].text is None and "too long" in lines[0].problem and lines[1].text == "help"
    lines, _ = reader.feed(b"\xc3\x28\xff\r")
    assert lines[0].text is None and "not text" in lines[0].problem
    lines, _ = reader.feed(b"\x1b[A\x1b[1;5Chelp\x00\x07\r")
    assert [l.text for l in lines] == ["help"]


def test_line_reader_masks_a_secret_typed_inline():
    reader = LineReader()
    reader.echo = True
    reader.mask = lambda typed: typed.startswith("config set mqtt.status.password ")
    lines, echo = reader.feed("config set mqtt.status.password pässwörd\r".encode())
    assert lines[0].text == "config set mqtt.status.password pässwörd"
    assert echo == b"config set mqtt.status.password ********\r\n"


def test_line_reader_one_line_at_a_time_keeps_the_rest():
    reader = LineReader()
    reader.echo = True
    lines, echo = reader.feed(b"login tech\rsecret pass\r", one_line=True)
    assert [l.text for l in lines] == ["login tech"] and echo == b"login tech\r\n" and reader.pending
    reader.echo = False  # the session asked for a password
    lines, echo = reader.feed(b"", one_line=True)
    assert [l.text for l in lines] == ["secret pass"] and echo == b"" and not reader.pending


def test_line_reader_echoes_only_when_asked():
    reader = LineReader()
    reader.echo = True
    _, echo = reader.feed(b"ab\x7f\r")
    assert echo == b"ab\b \b\r\n"
    reader.echo = False
    _, echo = reader.feed(b"secret\r")
    assert echo == b""


# --- auth -------------------------------------------------------------------------------------------

def test_password_hash_verifies_and_never_holds_the_password():
    stored = hash_password("correct horse battery", log2_n=10)
    assert stored.startswith("scrypt$10$") and "correct" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert not verify_password("x", "scrypt$99$8$1$AAAA$AAAA")  # malformed: matches nothing
    assert password_problem("short") and password_problem("long enough pass") is None


def test_lockout_grows_and_persists(tmp_path):
    now = [1000.0]
    lock = Lockout(tmp_path / "lockout.json", failures_to_lock=3, lockout_s=900, clock=lambda: now[0])
    assert lock.failed() == 2 and lock.failed() == 4
    assert lock.failed() == 900
    again = Lockout(tmp_path / "lockout.json", 3, 900, clock=lambda: now[0])  # a restart
    assert again.failures == 3 and again.remaining_s() == 900
    now[0] += 900
    assert again.failed() == 1800  # each further failure doubles
    now[0] -= 86400  # the clock set back a day: the lock is not stretched
    assert again.remaining_s() == 1800
    again.succeeded()
    assert Lockout(tmp_path / "lockout.json", 3, 900, clock=lambda: now[0]).failures == 0


def test_unreadable_lockout_file_locks(tmp_path):
    (tmp_path / "lockout.json").write_text("{not json")
    assert Lockout(tmp_path / "lockout.json", 3, 900).remaining_s() > 800


# --- the allow-list and the editor ---------------------------------------------------------------------

@pytest.mark.parametrize("key, allowed", [
    ("source.fps", True), ("mqtt.status.url", True), ("mqtt.destinations.county.password", True),
    ("logging.level", True), ("unit.latitude", True), ("scene.privacy_masks", True),
    ("policy.bundle", False), ("policy.trusted_keys", False), ("policy.hotlists", False),
    ("policy.hmac_keys", False), ("audit.unit_key", False), ("unit.state_dir", False), ("unit.id", False),
    ("console.password_hash", False), ("console.lockout_s", False), ("mqtt.destinations.county.id", False),
    ("outbox.max_mb", False), ("recognizer.min_confidence", False), ("policy", False), ("Policy.bundle", False),
    ("delivery.allow_plaintext_loopback", False),
])
def test_allow_list(key, allowed):
    assert check_key(key)[0] is allowed


@pytest.mark.parametrize("key", ["policy.bundle", "policy.trusted_keys", "policy.hotlists", "policy.hmac_keys",
                                 "delivery.allow_plaintext_loopback"])
def test_keys_that_could_widen_sharing_are_refused_as_policy_keys(key):
    assert check_key(key)[1] == "policy_key"


def test_settable_keys_are_all_allowed():
    keys = settable_keys({"mqtt": {"destinations": [{"id": "county"}]}})
    assert "mqtt.destinations.county.password" in keys and "source.fps" in keys
    assert not any(k.startswith(("policy", "audit", "console")) for k in keys)


def _editor(tmp_path: Path, text: str) -> ConfigEditor:
    config = tmp_path / "unit.toml"
    config.write_text(text)
    return ConfigEditor(config, tmp_path / "history")


BASE = """
[source]
kind = "image_folder"
path = "frames"
fps = 10
[policy]
trusted_keys = ["dept-a.pub"]
"""


def test_editor_refuses_a_change_the_unit_could_not_start_with(tmp_path):
    """With the run-time file checks handed in, `apply` refuses a change that adds a file
    problem (naming the key), writes nothing, and still lets other changes through."""
    from agent.runtime.preflight import check_files
    (tmp_path / "frames").mkdir()
    (tmp_path / "dept-a.pub").write_text("not used here")
    text = BASE + f'[unit]\nstate_dir = "{tmp_path / "state"}"\n'
    editor = _editor(tmp_path, text)
    editor.file_checks = check_files
    before = (tmp_path / "unit.toml").read_bytes()
    editor.set("source.path", str(tmp_path / "no-such-folder"))
    with pytest.raises(EditError, match=r"could not start with it: source.path: .*no-such-folder"):
        editor.apply()
    assert (tmp_path / "unit.toml").read_bytes() == before and editor.history() == []
    editor.discard()
    editor.set("source.fps", "12")
    assert editor.apply().keys == ["source.fps"]


def test_editor_validates_with_the_schema_and_names_the_key(tmp_path):
    editor = _editor(tmp_path, BASE)
    with pytest.raises(EditError, match=r"source.fps: 500.0 is not a usable frame rate"):
        editor.set("source.fps", "500")
    with pytest.raises(EditError, match="no such setting"):
        editor.set("source.fsp", "5")
    with pytest.raises(EditError) as refused:
        editor.set("policy.trusted_keys", '["evil.pub"]')
    assert refused.value.reason == "policy_key"
    editor.set("mqtt.destinations.county.password", "s3cret")
    assert editor.diff() == [("mqtt.destinations.county.password", None, "*** (set)")]  # never the value
    assert editor.apply().keys == ["mqtt.destinations.county.password"]  # a new entry for the credentials
    assert tomllib.loads(editor.path.read_text())["mqtt"]["destinations"] == [{"id": "county", "password": "s3cret"}]


def test_apply_then_rollback_restores_device_settings_only(tmp_path):
    editor = _editor(tmp_path, BASE)
    editor.set("source.fps", "15")
    applied = editor.apply()
    assert applied.keys == ["source.fps"]
    assert tomllib.loads(editor.path.read_text())["source"]["fps"] == 15
    # an administrator changes the trusted keys on the unit afterwards ...
    doc = tomllib.loads(editor.path.read_text())
    doc["policy"]["trusted_keys"] = ["dept-b.pub"]
    editor.path.write_text(toml_out.dumps(doc))
    # ... and a rollback puts the old fps back, never the old trusted key
    rolled = editor.rollback()
    after = tomllib.loads(editor.path.read_text())
    assert rolled.keys == ["source.fps"] and after["source"]["fps"] == 10
    assert after["policy"]["trusted_keys"] == ["dept-b.pub"]
    with pytest.raises(EditError, match="no earlier version"):
        editor.rollback()


def test_invalid_config_file_is_never_written(tmp_path):
    editor = _editor(tmp_path, BASE)
    editor.set("unit.latitude", "41.5")  # needs longitude too: staged, with the problem named
    before = editor.path.read_text()
    with pytest.raises(EditError, match="latitude and longitude go together"):
        editor.apply()
    assert editor.path.read_text() == before


# --- transfers -----------------------------------------------------------------------------------------

def test_download_chunks_carry_crc_and_resume_anywhere():
    transfers = Transfers()
    data = bytes(range(256)) * 40
    tid, item = transfers.offer(data)
    header, chunk = transfers.chunk(tid, 5000, 4096)
    assert header["offset"] == 5000 and header["crc32"] == zlib.crc32(chunk) and chunk == data[5000:9096]
    assert item.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(TransferError):
        transfers.chunk("d99", 0, 10)


def test_upload_checks_offsets_and_checksum():
    transfers = Transfers()
    data = b"signed bundle bytes" * 10
    tid = transfers.begin_upload(len(data), hashlib.sha256(data).hexdigest())
    transfers.upload_data(tid, 0, base64.b64encode(data[:50]).decode())
    with pytest.raises(TransferError, match="continues at offset 50"):
        transfers.upload_data(tid, 0, base64.b64encode(data[:50]).decode())
    transfers.upload_data(tid, 50, base64.b64encode(data[50:]).decode())
    assert transfers.take_upload(tid) == data
    bad = transfers.begin_upload(4, "0" * 64)
    transfers.upload_data(bad, 0, base64.b64encode(b"abcd").decode())
    with pytest.raises(TransferError, match="SHA-256"):
        transfers.take_upload(bad)


# --- TOML writer ------------------------------------------------------------------------------------------

def test_toml_writer_round_trips():
    doc = {"unit": {"id": "u-1", "latitude": 41.5}, "source": {"loop": True, "fps": 12.5, "path": 'a "q" \\ \x7f'},
           "scene": {"privacy_masks": [[[0.0, 0.1], [0.5, 0.1], [0.5, 0.4]]]},
           "policy": {"trusted_keys": ["a.pub", "b.pub"]},
           "mqtt": {"keepalive_s": 30, "destinations": [{"id": "a", "password": "p"}, {"id": "b"}],
                    "status": {"url": "mqtt://h:1"}}}
    assert tomllib.loads(toml_out.dumps(doc)) == doc
    shipped = tomllib.loads((ROOT / "firmware_config" / "plategate.toml").read_text())
    assert tomllib.loads(toml_out.dumps(shipped)) == shipped


# --- the agent's control server --------------------------------------------------------------------------

def test_control_server_answers_bad_requests_and_keeps_serving(tmp_path):
    def boom(request):
        raise RuntimeError("bug in an operation")

    path = tmp_path / ("long-" * 20) / "control.sock"  # longer than sun_path allows
    server = ControlServer(path, {"ping": lambda r: {"pong": True}, "boom": boom})
    server.start()
    try:
        client = ControlClient(path)
        assert client.call("ping") == {"ok": True, "pong": True}
        assert client.call("boom")["reason"] == "internal"
        assert client.call("nope")["reason"] == "unknown_op"
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(f"/proc/self/fd/{_dirfd(path)}/control.sock")
            raw.sendall(b"\xff\xfe not json\n")
            assert json.loads(raw.recv(4096))["reason"] == "bad_request"
        with socket.socket(socket.AF_UNIX) as raw:  # a client that vanishes mid-message
            raw.connect(f"/proc/self/fd/{_dirfd(path)}/control.sock")
            raw.sendall(encode({"op": "ping"})[:5])
        assert client.call("ping")["pong"] is True
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    finally:
        server.stop()
    assert not path.exists()


_fds: list[int] = []


def _dirfd(path: Path) -> int:
    import os
    fd = os.open(path.parent, os.O_RDONLY)
    _fds.append(fd)
    return fd


def test_console_audit_records_are_limited_to_console_events():
    from agent.control.ops import AgentOps

    recorded = []

    class Audit:
        def record(self, event, **fields):
            recorded.append((event, fields))

        def flush(self):
            pass

    class P:
        audit = Audit()

        class capture:
            frames_read = 0

    ops = AgentOps(P(), lambda n: [])
    assert not ops.audit_record({"event": "policy.installed", "fields": {}})["ok"]
    ops.audit_record({"event": "console.login", "fields": {"technician": "t", "password": "x", "plate": "ABC"}})
    assert recorded == [("console.login", {"technician": "t"})]


# --- a session in-process: audit spool while the agent is down, time set ---------------------------------

def _session(tmp_path, **ctx_args):
    from agent.config.loader import load_config
    from agent.console.commands import command_table
    from agent.console.context import ConsoleContext
    from agent.console.session import Session

    config = tmp_path / "unit.toml"
    config.write_text(BASE + f'[unit]\nstate_dir = "{tmp_path / "state"}"\n')
    (tmp_path / "frames").mkdir(exist_ok=True)
    ctx = ConsoleContext.create(config, load_config(config), **ctx_args)
    return Session(ctx, command_table()), ctx


def _line(text):
    from agent.console.lines import Line
    return Line(text)


def test_audit_is_spooled_while_the_agent_is_down_and_handed_over_later(tmp_path):
    session, ctx = _session(tmp_path)
    reply = session.handle(_line("login tech-1"))
    assert reply.data["need"] == "new_password"
    session.handle(_line("a long enough password"))
    reply = session.handle(_line("a long enough password"))
    assert reply.ok and session.technician == "tech-1"
    assert "a long enough password" not in ctx.spool_path.read_text()
    assert [json.loads(l)["event"] for l in ctx.spool_path.read_text().splitlines()] == \
        ["console.password_set", "console.login"]
    assert session.handle(_line("status")).reason == "agent_unavailable"

    received = []
    server = ControlServer(ctx.control.path, {"audit.record": lambda r: received.append(r) or {}})
    server.start()
    try:
        session.handle(_line("logout"))
    finally:
        server.stop()
    assert [r["event"] for r in received] == ["console.password_set", "console.login", "console.logout"]
    assert received[0]["fields"]["console_time"] and not ctx.spool_path.exists()


def test_time_set_is_validated_refused_under_ntp_and_audited(tmp_path, monkeypatch):
    from agent.console import commands

    set_to = []
    session, ctx = _session(tmp_path, set_clock=set_to.append)
    session.technician = "tech-1"
    assert session.handle(_line("time set 2026-13-01T00:00:00Z")).reason == "usage"
    assert session.handle(_line("time set 2026-05-01T14:30:00")).reason == "usage"  # no zone
    monkeypatch.setattr(commands, "clock_status", lambda: {"synchronized": True, "now": "x"})
    assert session.handle(_line("time set 2026-05-01T14:30:00Z")).reason == "ntp_synchronised" and not set_to
    monkeypatch.setattr(commands, "clock_status", lambda: {"synchronized": False, "now": "x"})
    assert session.handle(_line("time set 2026-05-01T14:30:00Z")).ok
    assert set_to == [1777645800.0]
    spooled = [json.loads(l) for l in ctx.spool_path.read_text().splitlines()]
    assert spooled[-1]["event"] == "console.time_set" and spooled[-1]["fields"]["new"] == "2026-05-01T14:30:00Z"


def test_snapshot_masks_before_scaling_and_scales_to_640():
    import cv2
    import numpy as np

    from agent.control.snapshot import encode_snapshot, privacy_masks

    image = np.full((720, 1280, 3), 200, np.uint8)
    mask = ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5))  # the top-left quarter
    jpeg = encode_snapshot(image, [mask])
    out = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == (360, 640, 3)
    assert out[:170, :310].max() < 20 and out[200:, 340:].min() > 180
    assert privacy_masks(object()) == ()  # a build without [scene] has no masks to apply

    class Scene:
        privacy_masks = (mask,)

    class Config:
        scene = Scene()

    assert privacy_masks(Config()) == (mask,)


def test_plategate_serial_options_all_have_help():
    from agent.console.client import build_parser

    parser = build_parser()
    assert all(action.help for action in parser._actions)
    assert "exits 0 (done), 1 (refused or failed), 2 (usage) or 3" in parser.description
