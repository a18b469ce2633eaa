"""`plategate-serial PORT [--baud N] [COMMAND ...]`: the field technician's client for the unit's console.

Without a command it is interactive (line editing, history, tab completion of commands and
config keys, ok/error in colour on a terminal). With one it runs that command and exits:

    plategate-serial /dev/ttyUSB0 status --json
    plategate-serial /dev/ttyUSB0 snapshot aim.jpg
    plategate-serial /dev/ttyUSB0 config set source.fps 15 --apply
    plategate-serial /dev/ttyUSB0 policy install county-v8.bundle

Exit codes: 0 done, 1 the unit refused or the command failed, 2 usage, 3 no usable answer
from the unit (port, cable, login). The password comes from PLATEGATE_SERIAL_PASSWORD or is
asked for (never echoed); the technician id from --tech, PLATEGATE_TECH, or the user name.
The client talks to the console in its JSON mode; see docs/console.md for the protocol.
"""
from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import shlex
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import serial

from agent.console.port import DEFAULT_BAUD, PortError, open_port

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3
UPLOAD_CHUNK = 2048
CHUNK = 8192
CLEAR_LINE = b"\x15"  # Ctrl-U first: whatever noise left half a line on the unit does not prefix ours


class NoAnswer(ConnectionError):
    """The unit did not answer usefully (port gone, cable out, garbage only)."""


class Link:
    """The console's JSON mode over a serial port: one request, one reply, matched by id."""

    def __init__(self, port: serial.Serial, timeout_s: float = 20.0):
        self.port = port
        self.timeout_s = timeout_s
        self._ids = 0
        self.bytes_out = 0
        self.bytes_in = 0

    def sync(self) -> None:
        """Abandon any half-typed line, switch to JSON mode, and drop whatever came before."""
        for attempt in range(3):
            self._send(b"\x03\r")
            time.sleep(0.05)
            self.port.reset_input_buffer()
            try:
                reply = self.request("mode json", timeout_s=3.0)
            except NoAnswer:
                continue
            if reply.get("mode") == "json":
                return
        raise NoAnswer("the unit's console does not answer (check the cable, the port and the baud rate)")

    def _send(self, data: bytes) -> None:
        self.port.write(data)
        self.bytes_out += len(data)

    def request(self, line: str, timeout_s: float | None = None, secret: bool = False) -> dict[str, Any]:
        """Send one command line; the JSON reply carrying its id."""
        if secret:
            self._send(CLEAR_LINE + line.encode() + b"\r")
            return self._reply(self._last_id, timeout_s)
        self._ids += 1
        self._last_id = f"c{self._ids}"
        self._send(CLEAR_LINE + f"@{self._last_id} {line}\r".encode())
        return self._reply(self._last_id, timeout_s)

    _last_id = ""

    def _reply(self, request_id: str, timeout_s: float | None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while time.monotonic() < deadline:
            raw = self.port.readline()
            self.bytes_in += len(raw)
            if not raw:
                continue
            start = raw.find(b"{")
            if start < 0:
                continue  # an echo, a prompt, noise
            try:
                message = json.loads(raw[start:].decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue
            if isinstance(message, dict) and message.get("id") == request_id:
                message.pop("id", None)
                return message
        raise NoAnswer(f"no answer from the unit within {timeout_s or self.timeout_s:.0f} s")

    def read_exact(self, length: int, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        data = bytearray()
        while len(data) < length and time.monotonic() < deadline:
            got = self.port.read(length - len(data))
            data += got
        self.bytes_in += len(data)
        return bytes(data)

    def resync(self) -> None:
        """After a damaged chunk: wait for the line to go quiet, then forget what is buffered."""
        quiet_since = time.monotonic()
        deadline = quiet_since + 3.0
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.3:
            if self.port.read(4096):
                quiet_since = time.monotonic()
        self.port.reset_input_buffer()


# --- transfers ---------------------------------------------------------------------------------------

def download(link: Link, transfer_id: str, size: int, sha256: str, chunk: int = CHUNK,
             progress: Callable[[int, int], None] | None = None, give_up_s: float = 120.0) -> bytes:
    """Fetch a download chunk by chunk; a short or damaged chunk is asked for again (resume at its offset)."""
    data = bytearray()
    last_progress = time.monotonic()
    while len(data) < size:
        try:
            header = link.request(f"get {transfer_id} {len(data)} {chunk}", timeout_s=5.0)
        except NoAnswer:
            if time.monotonic() - last_progress > give_up_s:
                raise
            link.resync()
            continue
        if not header.get("ok"):
            raise RuntimeError(header.get("error", "download refused"))
        length = int(header["length"])
        body = link.read_exact(length, timeout_s=2.0 + 2 * length * 10 / max(1200, link.port.baudrate))
        if len(body) != length or zlib.crc32(body) != int(header["crc32"]) or int(header["offset"]) != len(data):
            if time.monotonic() - last_progress > give_up_s:
                raise NoAnswer(f"download {transfer_id} stalled at {len(data)} of {size} bytes")
            link.resync()
            continue
        data += body
        last_progress = time.monotonic()
        if progress:
            progress(len(data), size)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RuntimeError(f"download {transfer_id}: SHA-256 does not match (the line damaged it); try again")
    return bytes(data)


def upload(link: Link, data: bytes, progress: Callable[[int, int], None] | None = None) -> str:
    import base64
    reply = link.request(f"upload begin {len(data)} {hashlib.sha256(data).hexdigest()}")
    if not reply.get("ok"):
        raise RuntimeError(reply.get("error", "upload refused"))
    transfer_id = reply["transfer"]
    offset = 0
    while offset < len(data):
        piece = data[offset:offset + UPLOAD_CHUNK]
        try:
            reply = link.request(f"upload data {transfer_id} {offset} {base64.b64encode(piece).decode()}",
                                 timeout_s=10.0)
        except NoAnswer:
            link.resync()
            reply = link.request(f"upload status {transfer_id}")
        if not reply.get("ok") and reply.get("reason") not in ("bad_offset", "bad_chunk"):
            raise RuntimeError(reply.get("error", "upload failed"))
        if not reply.get("ok"):
            reply = link.request(f"upload status {transfer_id}")
        offset = int(reply.get("received", offset))
        if progress:
            progress(offset, len(data))
    return transfer_id


class Progress:
    """A progress bar on stderr while a file crosses the line (only on a terminal)."""

    def __init__(self, label: str, stream=sys.stderr):
        self.label = label
        self.stream = stream
        self.started = time.monotonic()
        self.enabled = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0
        self.stream.write(f"\r{self.label} [{bar:<30}] {share:4.0%} {done / 1024:.1f}/{total / 1024:.1f} KB "
                          f"{rate / 1024:.1f} KB/s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


# --- the client ---------------------------------------------------------------------------------------

class Client:
    def __init__(self, link: Link, technician: str, out=sys.stdout, colour: bool = False):
        self.link = link
        self.technician = technician
        self.out = out
        self.colour = colour

    def ensure_login(self, ask: Callable[[str], str] | None) -> None:
        who = self.link.request("whoami")
        if who.get("technician"):
            return
        reply = self.link.request(f"login {self.technician}")
        while reply.get("ok") and reply.get("need"):
            secret = os.environ.get("PLATEGATE_SERIAL_PASSWORD")
            if secret is None:
                if ask is None:
                    raise NoAnswer("not logged in: set PLATEGATE_SERIAL_PASSWORD or run plategate-serial on a terminal")
                secret = ask({"password": "Password: ", "new_password": "New console password: ",
                              "repeat_password": "Repeat password: "}.get(reply["need"], "Password: "))
            reply = self.link.request(secret, secret=True)
        if not reply.get("ok"):
            raise NoAnswer(f"login failed: {reply.get('error')}")

    def run(self, words: list[str], as_json: bool = False, apply: bool = False) -> int:
        """One command; returns its exit code."""
        if not words:
            return EXIT_USAGE
        if words[0] == "snapshot":
            return self.snapshot(words[1:], as_json)
        if words[:2] in (["policy", "install"], ["hotlist", "install"]) and len(words) == 3 and \
                Path(words[2]).is_file():
            return self.install(words[0], Path(words[2]), as_json)
        reply = self.link.request(shlex.join(words), timeout_s=90.0)
        code = self.show(reply, as_json)
        if code == EXIT_OK and apply and words[:2] in (["config", "set"], ["config", "unset"]):
            code = self.show(self.link.request("config apply", timeout_s=30.0), as_json)
        return code

    def snapshot(self, args: list[str], as_json: bool) -> int:
        if not args:
            print("usage: snapshot FILE.jpg [WIDTH]", file=sys.stderr)
            return EXIT_USAGE
        started = time.monotonic()
        reply = self.link.request("camera snapshot" + (f" {int(args[1])}" if len(args) > 1 else ""), timeout_s=30.0)
        if not reply.get("ok"):
            return self.show(reply, as_json)
        data = download(self.link, reply["transfer"], int(reply["size"]), reply["sha256"],
                        progress=Progress("snapshot"))
        Path(args[0]).write_bytes(data)
        seconds = time.monotonic() - started
        result = {"ok": True, "file": args[0], "bytes": len(data), "sha256": reply["sha256"],
                  "seconds": round(seconds, 2), "captured_at": reply.get("captured_at")}
        return self.show({**result, "message": f"saved {args[0]} ({len(data)} bytes, {seconds:.1f} s)"}, as_json)

    def install(self, what: str, path: Path, as_json: bool) -> int:
        transfer_id = upload(self.link, path.read_bytes(), progress=Progress(f"{what} bundle"))
        return self.show(self.link.request(f"{what} install {transfer_id}", timeout_s=30.0), as_json)

    def show(self, reply: dict[str, Any], as_json: bool) -> int:
        if as_json:
            print(json.dumps(reply, indent=2), file=self.out)
        elif reply.get("ok"):
            text = reply.get("message") or _render_plain(reply)
            print(self._paint("ok", "32") + (f" {text}" if text else ""), file=self.out)
        else:
            print(self._paint("error", "31") + f": {reply.get('error')}", file=self.out)
        return EXIT_OK if reply.get("ok") else EXIT_FAILED

    def _paint(self, word: str, code: str) -> str:
        return f"\033[{code}m{word}\033[0m" if self.colour else word


def _render_plain(reply: dict[str, Any]) -> str:
    from agent.console.commands import render
    body = {k: v for k, v in reply.items() if k not in ("ok", "message")}
    return ("\n" + render(body).replace("\r\n", "\n")) if body else ""


def interactive(client: Client) -> int:
    import readline

    history = Path.home() / ".plategate_serial_history"
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    words = _completion_words(client)
    readline.set_completer_delims(" \t")
    readline.set_completer(lambda text, state: ([w for w in words(readline.get_line_buffer(), text)] + [None])[state])
    readline.parse_and_bind("tab: complete")
    print("connected; `help` lists the unit's commands, `snapshot FILE`, `policy install FILE` and "
          "`quit` are the client's own", file=client.out)
    code = EXIT_OK
    try:
        while True:
            try:
                line = input("plategate> ")
            except EOFError:
                break
            if line.strip() in ("quit", "exit"):
                break
            try:
                words_in = shlex.split(line)
            except ValueError as exc:
                print(f"error: {exc}", file=client.out)
                continue
            if not words_in:
                continue
            if words_in[0] == "login":
                try:
                    client.technician = words_in[1] if len(words_in) > 1 else client.technician
                    client.link.request("logout")
                    client.ensure_login(getpass.getpass)
                    print(client._paint("ok", "32") + f" logged in as {client.technician}", file=client.out)
                except NoAnswer as exc:
                    print(client._paint("error", "31") + f": {exc}", file=client.out)
                continue
            json_out = "--json" in words_in
            apply = "--apply" in words_in
            words_in = [w for w in words_in if w not in ("--json", "--apply")]
            code = client.run(words_in, json_out, apply)
    finally:
        try:
            readline.write_history_file(history)
        except OSError:
            pass
        try:
            client.link.request("logout", timeout_s=3.0)
        except (NoAnswer, serial.SerialException, OSError):
            pass
    return code


def _completion_words(client: Client) -> Callable[[str, str], list[str]]:
    try:
        commands = [c["command"] for c in client.link.request("help").get("commands", [])]
        keys = client.link.request("config keys").get("keys", [])
    except NoAnswer:
        commands, keys = [], []
    local = ["snapshot", "quit", "login"]

    def complete(buffer: str, text: str) -> list[str]:
        typed = buffer.split()
        if buffer.endswith(" "):
            typed.append("")
        if len(typed) <= 1:
            firsts = sorted({c.split()[0] for c in commands} | set(local))
            return [w for w in firsts if w.startswith(text)]
        if typed[0] == "config" and len(typed) == 3:
            return [k for k in keys if k.startswith(text)]
        seconds = sorted({c.split()[1] for c in commands if c.startswith(typed[0] + " ") and len(c.split()) > 1})
        return [w for w in seconds if w.startswith(text)] if len(typed) == 2 else []
    return complete


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plategate-serial",
        description="The field technician's client for a PlateGate unit's serial console. Without a command "
                    "it is interactive; with one it runs it and exits 0 (done), 1 (refused or failed), "
                    "2 (usage) or 3 (no usable answer: port, cable, login). Client commands: snapshot FILE "
                    "[WIDTH], policy install FILE, hotlist install FILE; every other command goes to the unit "
                    "(`help` lists them). --json prints the unit's JSON reply; --apply after `config set` "
                    "applies at once. Password: PLATEGATE_SERIAL_PASSWORD or asked for.")
    parser.add_argument("port", help="serial port of the USB-serial cable, e.g. /dev/ttyUSB0")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD, help=f"line speed (default {DEFAULT_BAUD})")
    parser.add_argument("--tech", default=None, help="technician id for the audit log (default: PLATEGATE_TECH "
                                                     "or your user name)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for each reply (default 20)")
    parser.add_argument("command", nargs="*", help="a command for the unit (none: interactive)")
    return parser


def _in_order(argv: list[str], args: argparse.Namespace) -> list[str]:
    """The command words as typed: everything after the port except the client's own options."""
    words, skip = [], 0
    for i, word in enumerate(argv):
        if skip:
            skip -= 1
            continue
        if word in ("--baud", "--tech", "--timeout"):
            skip = 1
            continue
        if word.startswith(("--baud=", "--tech=", "--timeout=")):
            continue
        words.append(word)
    return words[words.index(args.port) + 1:] if args.port in words else words


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)  # the command's own flags (--json, --apply) are not ours
    words = _in_order(list(argv) if argv is not None else sys.argv[1:], args)
    as_json = "--json" in words
    apply = "--apply" in words
    words = [w for w in words if w not in ("--json", "--apply")]
    technician = args.tech or os.environ.get("PLATEGATE_TECH") or getpass.getuser()
    try:
        port = open_port(args.port, args.baud, timeout=0.2)
    except PortError as exc:
        print(f"plategate-serial: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    try:
        link = Link(port, timeout_s=args.timeout)
        link.sync()
        client = Client(link, technician, colour=colour)
        client.ensure_login(getpass.getpass if sys.stdin.isatty() else None)
        if not words:
            return interactive(client)
        return client.run(words, as_json, apply)
    except NoAnswer as exc:
        print(f"plategate-serial: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except (serial.SerialException, OSError) as exc:
        print(f"plategate-serial: the serial line failed: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except RuntimeError as exc:
        print(f"plategate-serial: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    finally:
        _leave(port)


def _leave(port: serial.Serial) -> None:
    """Put the console back in text mode for the next person, who may use a plain terminal."""
    try:
        port.write(b"\x03\rmode text\r")
        port.flush()
    except (serial.SerialException, OSError):
        pass
    port.close()
