"""The console's commands: one small function each, and the table `help` is generated from.

Everything about the pipeline is asked of the agent over the control socket
(agent/control/ops.py); the config file is edited through `ConfigEditor`, whose allow-list
is the one place that decides what the console may change.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import time
from typing import Any

from agent import events
from agent.console.session import Command, Reply, Session, error
from agent.console.settings import EditError, check_key, is_secret, settable_keys
from agent.console.transfers import DEFAULT_CHUNK, TransferError
from agent.control.ops import clock_status
from agent.control.protocol import AgentUnavailable

STORED_READS = ("reads", "plates", "search", "export", "outbox", "history", "hits", "lookup")


def _agent(session: Session, op: str, **args: Any) -> dict[str, Any] | Reply:
    """The agent's reply to `op`, or an error Reply naming why there was none."""
    try:
        reply = session.ctx.call(op, **args)
    except AgentUnavailable as exc:
        return error(str(exc), "agent_unavailable")
    if not reply.get("ok"):
        return error(str(reply.get("error", f"{op} failed")), str(reply.get("reason", "agent_error")))
    reply.pop("ok", None)
    return reply


def _usage(command: str, args: str) -> Reply:
    return error(f"usage: {command} {args}".rstrip(), "usage")


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise EditError("usage", f"{what} must be a whole number, not {text!r}") from None


# --- session ---------------------------------------------------------------------------------------------

def cmd_help(s: Session, args: list[str]) -> Reply:
    if args:
        matches = [c for c in s.commands.values() if c.words.split()[0] == args[0].lower() and not c.hidden]
        if not matches:
            return error(f"no command '{args[0]}'; type `help`", "unknown_command")
        lines = [f"{c.words} {c.args}".rstrip() + f"\r\n    {c.help}" for c in matches]
        return Reply(text="\r\n".join(lines), data={"commands": [_describe(c) for c in matches]})
    seen = sorted((c for c in s.commands.values() if not c.hidden), key=lambda c: c.words)
    width = max(len(f"{c.words} {c.args}") for c in seen)
    lines = [f"{(c.words + ' ' + c.args).strip():<{width}}  {c.help.split('. ')[0]}" for c in seen]
    return Reply(text="\r\n".join(lines), data={"commands": [_describe(c) for c in seen]})


def _describe(c: Command) -> dict:
    return {"command": c.words, "args": c.args, "help": c.help, "needs_login": c.needs_login}


def cmd_mode(s: Session, args: list[str]) -> Reply:
    if len(args) != 1 or args[0] not in ("text", "json"):
        return _usage("mode", "text|json")
    s.mode = args[0]
    return Reply(text=f"mode {s.mode}", data={"mode": s.mode})


def cmd_login(s: Session, args: list[str]) -> Reply:
    if len(args) != 1:
        return _usage("login", "TECHNICIAN-ID")
    if s.technician is not None:
        s.logout("new_login")
    return s.login(args[0])


def cmd_logout(s: Session, args: list[str]) -> Reply:
    who = s.technician
    s.logout("command")
    return Reply(text=f"logged out {who}")


def cmd_whoami(s: Session, args: list[str]) -> Reply:
    lockout = s.lockout()
    data = {"technician": s.technician, "mode": s.mode, "password_set": s.ctx.password_hash() is not None,
            "locked_for_s": round(lockout.remaining_s())}
    if s.technician is None:
        return Reply(text="not logged in (login YOUR-ID)", data=data)
    return Reply(text=f"logged in as {s.technician}", data=data)


def cmd_passwd(s: Session, args: list[str]) -> Reply:
    return s.change_password()


# --- status -------------------------------------------------------------------------------------------

def cmd_status(s: Session, args: list[str]) -> Reply:
    reply = _agent(s, "status")
    if isinstance(reply, Reply):
        return reply
    return Reply(text=render(reply), data=reply)


# --- config -------------------------------------------------------------------------------------------

def cmd_config_get(s: Session, args: list[str]) -> Reply:
    editor = s.ctx.editor
    try:
        _, doc = editor.current_doc()
        values = editor.effective(doc)
        staged = editor.effective(editor.staged_doc()) if editor.staged else values
    except (EditError, ValueError) as exc:
        return error(str(exc), getattr(exc, "reason", "invalid"))
    keys = [k for k in values if not args or k == args[0] or k.startswith(args[0] + ".")]
    if args and not keys:
        return error(f"{args[0]}: no such setting (`config keys` lists the ones you may change)", "unknown_key")
    out = {}
    lines = []
    for key in sorted(keys):
        shown = _show(key, values.get(key))
        item = {"value": shown, "settable": check_key(key)[0]}
        line = f"{key} = {json.dumps(shown)}"
        if staged.get(key) != values.get(key):
            item["staged"] = _show(key, staged.get(key))
            line += f"   (staged: {json.dumps(item['staged'])})"
        out[key] = item
        lines.append(line)
    return Reply(text="\r\n".join(lines), data={"settings": out})


def _show(key: str, value: Any) -> Any:
    return "***" if value is not None and is_secret(key) else value


def cmd_config_set(s: Session, args: list[str]) -> Reply:
    if len(args) == 1 and is_secret(args[0]) and check_key(args[0])[0]:
        return s.ask_secret(f"{args[0]} (not shown): ", lambda value: cmd_config_set(s, [args[0], value]))
    if len(args) != 2:
        return _usage("config set", "KEY VALUE   (quote a value with spaces; a secret KEY alone asks for it "
                                    "unseen)")
    key, value = args
    allowed, code, why = check_key(key)
    if not allowed:
        return s.refuse("config set", code, f"refused: {why}", key=key)
    try:
        pending = s.ctx.editor.set(key, value)
    except EditError as exc:
        return error(str(exc), exc.reason)
    shown = "***" if is_secret(key) else value
    text = f"staged {key} = {shown}; `config diff` to review, `config apply` to apply"
    if pending:
        text += "\r\nstill to fix before apply: " + "; ".join(pending)
    return Reply(text=text, data={"staged": key, "pending_problems": pending})


def cmd_config_unset(s: Session, args: list[str]) -> Reply:
    if len(args) != 1:
        return _usage("config unset", "KEY")
    allowed, code, why = check_key(args[0])
    if not allowed:
        return s.refuse("config unset", code, f"refused: {why}", key=args[0])
    try:
        pending = s.ctx.editor.unset(args[0])
    except EditError as exc:
        return error(str(exc), exc.reason)
    return Reply(text=f"staged: {args[0]} back to its default", data={"staged": args[0], "pending_problems": pending})


def cmd_config_diff(s: Session, args: list[str]) -> Reply:
    try:
        changes = s.ctx.editor.diff()
    except EditError as exc:
        return error(str(exc), exc.reason)
    if not changes:
        return Reply(text="nothing staged", data={"changes": []})
    lines = [f"{k}: {json.dumps(old)} -> {json.dumps(new)}" for k, old, new in changes]
    return Reply(text="\r\n".join(lines), data={"changes": [{"key": k, "old": o, "new": n} for k, o, n in changes]})


def cmd_config_discard(s: Session, args: list[str]) -> Reply:
    s.ctx.editor.discard()
    return Reply(text="staged changes discarded")


def cmd_config_apply(s: Session, args: list[str]) -> Reply:
    try:
        applied = s.ctx.editor.apply()
    except EditError as exc:
        if exc.reason in ("policy_key", "not_device_setting"):
            return s.refuse("config apply", exc.reason, str(exc))
        return error(str(exc), exc.reason)
    return _after_write(s, applied, rollback=False)


def cmd_config_rollback(s: Session, args: list[str]) -> Reply:
    try:
        applied = s.ctx.editor.rollback()
    except EditError as exc:
        return error(str(exc), exc.reason)
    return _after_write(s, applied, rollback=True)


def _after_write(s: Session, applied: Any, rollback: bool) -> Reply:
    s.ctx.audit(events.CONSOLE_CONFIG_APPLIED, technician=s.technician, keys=applied.keys,
                old_digest=applied.old_digest, new_digest=applied.new_digest, rollback=rollback)
    what = "rolled back" if rollback else "applied"
    data = {"keys": applied.keys, "old_digest": applied.old_digest, "new_digest": applied.new_digest,
            "rollback": rollback}
    reload = _agent(s, "reload")
    if isinstance(reload, Reply):
        data["reloaded"] = False
        return Reply(text=f"{what}: {', '.join(applied.keys) or 'no change'}; the agent was not reloaded "
                          f"({reload.text}); it uses the new config when it next starts", data=data)
    data["reloaded"] = True
    return Reply(text=f"{what}: {', '.join(applied.keys) or 'no change'}; the agent is reloading "
                      "(settings other than logging and policy take effect at its next restart: `restart`)",
                 data=data)


def cmd_config_keys(s: Session, args: list[str]) -> Reply:
    try:
        _, doc = s.ctx.editor.current_doc()
    except EditError as exc:
        return error(str(exc), exc.reason)
    keys = settable_keys(doc)
    return Reply(text="\r\n".join(keys), data={"keys": keys})


# --- camera -------------------------------------------------------------------------------------------

def cmd_camera_test(s: Session, args: list[str]) -> Reply:
    seconds = _int(args[0], "SECONDS") if args else 5
    reply = _agent(s, "camera.test", seconds=seconds)
    if isinstance(reply, Reply):
        return reply
    return Reply(text=render(reply), data=reply)


def cmd_camera_snapshot(s: Session, args: list[str]) -> Reply:
    width = _int(args[0], "WIDTH") if args else 640
    reply = _agent(s, "camera.snapshot", width=width)
    if isinstance(reply, Reply):
        return reply
    jpeg = base64.b64decode(reply.pop("jpeg"))
    transfer_id, item = s.ctx.transfers.offer(jpeg)
    data = {"transfer": transfer_id, "size": len(jpeg), "sha256": item.sha256, "chunk": DEFAULT_CHUNK, **reply}
    return Reply(text=f"snapshot {transfer_id} ready: {len(jpeg)} bytes of JPEG, sha256 {item.sha256[:16]}...; "
                      "save it with `plategate-serial PORT snapshot FILE.jpg`", data=data)


def cmd_get(s: Session, args: list[str]) -> Reply:
    if s.mode != "json":
        return error("binary transfers need `mode json` (plategate-serial does this)", "needs_json_mode")
    if not 1 <= len(args) <= 3:
        return _usage("get", "TRANSFER [OFFSET [LENGTH]]")
    try:
        offset = _int(args[1], "OFFSET") if len(args) > 1 else 0
        length = _int(args[2], "LENGTH") if len(args) > 2 else DEFAULT_CHUNK
        header, data = s.ctx.transfers.chunk(args[0], offset, length)
    except (TransferError, EditError) as exc:
        return error(str(exc), exc.reason)
    return Reply(data=header, binary=data)


def cmd_upload_begin(s: Session, args: list[str]) -> Reply:
    if len(args) != 2:
        return _usage("upload begin", "SIZE SHA256")
    try:
        transfer_id = s.ctx.transfers.begin_upload(_int(args[0], "SIZE"), args[1])
    except (TransferError, EditError) as exc:
        return error(str(exc), exc.reason)
    return Reply(text=f"upload {transfer_id} begun", data={"transfer": transfer_id, "received": 0})


def cmd_upload_data(s: Session, args: list[str]) -> Reply:
    if len(args) != 3:
        return _usage("upload data", "TRANSFER OFFSET BASE64")
    try:
        item = s.ctx.transfers.upload_data(args[0], _int(args[1], "OFFSET"), args[2])
    except (TransferError, EditError) as exc:
        return error(str(exc), exc.reason)
    return Reply(text=f"{len(item.data)} of {item.size} bytes", data={"received": len(item.data), "size": item.size})


def cmd_upload_status(s: Session, args: list[str]) -> Reply:
    if len(args) != 1:
        return _usage("upload status", "TRANSFER")
    try:
        item = s.ctx.transfers.upload_status(args[0])
    except TransferError as exc:
        return error(str(exc), exc.reason)
    return Reply(text=f"{len(item.data)} of {item.size} bytes", data={"received": len(item.data), "size": item.size})


# --- policy, hotlists, MQTT --------------------------------------------------------------------------------

def cmd_policy_show(s: Session, args: list[str]) -> Reply:
    reply = _agent(s, "policy.show")
    if isinstance(reply, Reply):
        return reply
    return Reply(text=render(reply["policy"]), data=reply)


def _install(s: Session, args: list[str], what: str) -> Reply:
    if len(args) != 1:
        return _usage(f"{what} install", "TRANSFER   (upload the signed bundle first; plategate-serial does both)")
    try:
        data = s.ctx.transfers.take_upload(args[0])
    except TransferError as exc:
        return error(str(exc), exc.reason)
    reply = _agent(s, f"{what}.install", data=base64.b64encode(data).decode("ascii"), technician=s.technician)
    if isinstance(reply, Reply):
        return reply
    summary = ", ".join(f"{k} {v}" for k, v in reply.items() if k in ("list_id", "version", "agency", "expires_at"))
    return Reply(text=f"{what} installed: {summary}", data=reply)


def cmd_policy_install(s: Session, args: list[str]) -> Reply:
    return _install(s, args, "policy")


def cmd_hotlist_install(s: Session, args: list[str]) -> Reply:
    return _install(s, args, "hotlist")


def cmd_mqtt_test(s: Session, args: list[str]) -> Reply:
    reply = _agent(s, "mqtt.test")
    if isinstance(reply, Reply):
        return reply
    results = reply.get("results", [])
    lines = [f"{r.get('destination')}: {r.get('result')} ({r.get('broker', '')}, identity: {r.get('identity', '-')})"
             + (f" {r['detail']}" if r.get("detail") else "") for r in results]
    ok = all(r.get("result") == "ok" for r in results)
    if not results:
        lines = ["no destination to test (no active policy, and no status broker configured)"]
    return Reply(ok=ok, text="\r\n".join(lines), data=reply, reason=None if ok else "mqtt_failed")


# --- audit, logs, time, restart ----------------------------------------------------------------------------

def cmd_audit_tail(s: Session, args: list[str]) -> Reply:
    reply = _agent(s, "audit.tail", n=_int(args[0], "N") if args else 200)
    if isinstance(reply, Reply):
        return reply
    return Reply(text=render(reply), data=reply)


def cmd_log_tail(s: Session, args: list[str]) -> Reply:
    reply = _agent(s, "log.tail", n=_int(args[0], "N") if args else 50)
    if isinstance(reply, Reply):
        return reply
    return Reply(text="\r\n".join(reply["lines"]) or "(no log lines yet)", data=reply)


def cmd_network_show(s: Session, args: list[str]) -> Reply:
    """Addresses and the default route, as `ip` reports them (read-only)."""
    import shutil
    import subprocess

    if shutil.which("ip") is None:
        return error("the `ip` tool is not installed on this unit", "unsupported")
    out = {}
    for name, argv in (("addresses", ["ip", "-brief", "address"]), ("default_route", ["ip", "route", "show", "default"])):
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            out[name] = result.stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError) as exc:
            out[name] = [f"({exc})"]
    text = "\r\n".join(out["addresses"] + [f"default route: {r}" for r in out["default_route"]] or ["no default route"])
    return Reply(text=text, data=out)


def cmd_time_show(s: Session, args: list[str]) -> Reply:
    status = clock_status()
    sync = {True: "synchronised (NTP)", False: "NOT synchronised", None: "sync state unknown"}[status["synchronized"]]
    return Reply(text=f"{status['now']} UTC, {sync}", data=status)


def cmd_time_set(s: Session, args: list[str]) -> Reply:
    if len(args) != 1:
        return _usage("time set", "YYYY-MM-DDTHH:MM:SSZ   (UTC)")
    try:
        when = dt.datetime.fromisoformat(args[0].replace("Z", "+00:00"))
    except ValueError:
        return error(f"{args[0]!r} is not a time like 2026-05-01T14:30:00Z", "usage")
    if when.tzinfo is None:
        return error("give the time in UTC with a Z (2026-05-01T14:30:00Z) or an offset", "usage")
    if when.year < 2024 or when.year > 2100:
        return error(f"{args[0]} is not a plausible date", "usage")
    if clock_status()["synchronized"]:
        return error("the clock is synchronised by NTP, which would undo this; check the network instead",
                     "ntp_synchronised")
    old = time.time()
    try:
        s.ctx.set_clock(when.timestamp())
    except (OSError, PermissionError) as exc:
        return error(f"cannot set the clock: {exc} (the console service needs CAP_SYS_TIME, which "
                     "the shipped unit does not grant: docs/console.md)", "permission")
    s.ctx.audit(events.CONSOLE_TIME_SET, technician=s.technician, old=_iso(old), new=_iso(when.timestamp()))
    return Reply(text=f"clock set to {_iso(when.timestamp())} (was {_iso(old)})")


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_restart(s: Session, args: list[str]) -> Reply:
    s.ctx.audit(events.CONSOLE_RESTART, technician=s.technician)
    reply = _agent(s, "restart")
    if isinstance(reply, Reply):
        return reply
    return Reply(text=reply.get("message", "restarting"), data=reply)


def cmd_stored_reads(s: Session, args: list[str]) -> Reply:
    return s.refuse("reads", "stored_reads", "refused: the console gives no access to stored reads (camera test "
                                              "shows the plates seen live, during the test only)")


# --- rendering ------------------------------------------------------------------------------------------

def render(value: Any, indent: int = 0) -> str:
    """Plain data as indented `key: value` lines for people."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.append(render(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
        return "\r\n".join(lines)
    if isinstance(value, list):
        return "\r\n".join(f"{pad}- " + render(item, indent + 1).lstrip() for item in value)
    return f"{pad}{_scalar(value)}"


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if value == {} or value == []:
        return "none"
    return str(value)


def command_table() -> dict[str, Command]:
    table = [
        Command("help", "[COMMAND]", "List the commands, or explain one.", cmd_help, needs_login=False),
        Command("mode", "text|json", "Replies for people (text) or one JSON object per reply (json, for "
                                     "programs; binary transfers need it).", cmd_mode, needs_login=False),
        Command("login", "TECHNICIAN-ID", "Log in; asks for the password, which is not shown. On a unit without "
                                          "a password the first login sets it (audited).", cmd_login,
                needs_login=False),
        Command("whoami", "", "Who is logged in, and whether the console is locked.", cmd_whoami, needs_login=False),
        Command("logout", "", "Log out (an idle session is logged out by itself).", cmd_logout),
        Command("passwd", "", "Change the console password (asks for the current one first).", cmd_passwd),
        Command("status", "", "Health, fps, queue depths, policy and model versions, last read, disk, clock.",
                cmd_status),
        Command("config get", "[KEY]", "Show settings (secrets as ***); KEY may be a section.", cmd_config_get),
        Command("config set", "KEY VALUE", "Stage a change to a device setting (validated now, applied by "
                                           "`config apply`). The policy, trusted keys and hotlists are refused.",
                cmd_config_set),
        Command("config unset", "KEY", "Stage a setting's return to its default.", cmd_config_unset),
        Command("config diff", "", "The staged changes against the running config.", cmd_config_diff),
        Command("config discard", "", "Drop the staged changes.", cmd_config_discard),
        Command("config apply", "", "Validate, write the config atomically and reload the agent (audited).",
                cmd_config_apply),
        Command("config rollback", "", "Restore the device settings of the version before the last apply "
                                       "(audited).", cmd_config_rollback),
        Command("config keys", "", "The settings the console may change.", cmd_config_keys),
        Command("camera test", "[SECONDS]", "Focus, brightness, fps and the plates seen live during the test "
                                            "(nothing stored is shown).", cmd_camera_test),
        Command("camera snapshot", "[WIDTH]", "A JPEG for aiming (640 px wide, privacy masks applied), "
                                              "fetched in checksummed chunks by plategate-serial.",
                cmd_camera_snapshot),
        Command("get", "TRANSFER [OFFSET [LENGTH]]", "One chunk of a download: a JSON header, then LENGTH raw "
                                                     "bytes (json mode).", cmd_get),
        Command("upload begin", "SIZE SHA256", "Start an upload of a signed bundle.", cmd_upload_begin),
        Command("upload data", "TRANSFER OFFSET BASE64", "One chunk of an upload.", cmd_upload_data),
        Command("upload status", "TRANSFER", "How much of an upload has arrived (where to resume).",
                cmd_upload_status),
        Command("mqtt test", "", "Connect to each destination of the policy and the status broker, check "
                                 "each server's TLS identity, report.", cmd_mqtt_test),
        Command("policy show", "", "The active policy, read-only: version, expiry, destinations and rules.",
                cmd_policy_show),
        Command("policy install", "TRANSFER", "Install an uploaded policy bundle; only one signed by a trusted "
                                              "department key, newer and unexpired, is accepted.",
                cmd_policy_install),
        Command("hotlist install", "TRANSFER", "Install an uploaded hotlist bundle (signed, as for policies).",
                cmd_hotlist_install),
        Command("audit tail", "[N]", "The last N audit records as counts and reasons (no plate text).",
                cmd_audit_tail),
        Command("log tail", "[N]", "The agent's last N log lines.", cmd_log_tail),
        Command("network show", "", "The unit's addresses and default route (read-only).", cmd_network_show),
        Command("time show", "", "The unit's clock (UTC) and whether NTP keeps it.", cmd_time_show),
        Command("time set", "YYYY-MM-DDTHH:MM:SSZ", "Set the clock when NTP cannot (audited).", cmd_time_set),
        Command("restart", "", "Restart the agent (audited).", cmd_restart),
    ]
    commands = {c.words: c for c in table}
    for word in STORED_READS:
        commands[word] = Command(word, "", "Refused: the console gives no access to stored reads.",
                                 cmd_stored_reads, hidden=True)
    return commands
