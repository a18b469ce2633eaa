"""What a console session works with: its config file, the agent's control socket, its own state.

The console keeps its own small state under ``<state_dir>/console/``: the lockout counter,
the config history for rollback, and an audit spool. The audit log has one writer, the
agent; the console sends its records over the control socket, and while the agent is down
it appends them to the spool, which is handed over (oldest first) as soon as the agent
answers again, so a login attempt is audited even when the agent is not running.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agent.config.loader import ConfigError, Problem
from agent.config.schema import ConsoleConfig, DeviceConfig
from agent.console.settings import ConfigEditor, EditError
from agent.console.transfers import Transfers
from agent.control.protocol import AgentUnavailable, ControlClient, socket_path
from agent.policy.schema import format_time

log = logging.getLogger(__name__)


def _file_checks(config: DeviceConfig) -> list[Problem]:
    """The file checks `plategate run` makes at start (agent.runtime.preflight), imported
    only when a change is applied: they load OpenCV and onnxruntime, which the long-running
    console process has no other use for."""
    from agent.runtime.preflight import check_files
    return check_files(config)


SPOOL_MAX_BYTES = 2 * 2**20


def set_system_clock(unix_time: float) -> None:
    """Set the realtime clock (needs CAP_SYS_TIME, which the shipped console unit does not grant:
    the clock decides when a policy expires; docs/console.md)."""
    time.clock_settime(time.CLOCK_REALTIME, unix_time)


@dataclass
class ConsoleContext:
    config_path: Path
    config: DeviceConfig
    control: ControlClient
    editor: ConfigEditor
    transfers: Transfers = field(default_factory=Transfers)
    set_clock: Callable[[float], None] = set_system_clock

    @classmethod
    def create(cls, config_path: Path, config: DeviceConfig, **kwargs: Any) -> "ConsoleContext":
        state = Path(config.unit.state_dir) / "console"
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(config_path=Path(config_path), config=config,
                   control=ControlClient(socket_path(config.unit.state_dir)),
                   editor=ConfigEditor(config_path, state / "config-history", file_checks=_file_checks),
                   **kwargs)

    @property
    def state_dir(self) -> Path:
        return Path(self.config.unit.state_dir) / "console"

    @property
    def console(self) -> ConsoleConfig:
        return self.config.console

    @property
    def lockout_path(self) -> Path:
        return self.state_dir / "lockout.json"

    @property
    def spool_path(self) -> Path:
        return self.state_dir / "audit-spool.jsonl"

    def password_hash(self) -> str | None:
        """Read from the file each time: `passwd` or the first login may have just written it."""
        try:
            _, doc = self.editor.current_doc()
            return self.editor.validate(doc).console.password_hash
        except (OSError, EditError, ConfigError):
            return self.config.console.password_hash

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """A control request; raises AgentUnavailable."""
        self.flush_spool()
        return self.control.call(op, **args)

    # --- audit -----------------------------------------------------------------------------------

    def audit(self, event: str, **fields: Any) -> None:
        try:
            self.flush_spool()
            reply = self.control.call("audit.record", event=event, fields=fields)
            if not reply.get("ok"):
                log.error("console audit record refused event=%s error=%s", event, reply.get("error"))
            return
        except AgentUnavailable:
            pass
        self._spool(event, fields)

    def _spool(self, event: str, fields: dict[str, Any]) -> None:
        fields = {**fields, "console_time": format_time(time.time())}
        line = json.dumps({"event": event, "fields": fields}, default=str) + "\n"
        try:
            if self.spool_path.exists() and self.spool_path.stat().st_size > SPOOL_MAX_BYTES:
                log.error("console audit spool full path=%s; record dropped event=%s", self.spool_path, event)
                return
            fd = os.open(self.spool_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("console audit spool not written path=%s error=%s", self.spool_path, exc)

    def flush_spool(self) -> None:
        """Hand spooled records to the agent; raises AgentUnavailable if it is still down."""
        if not self.spool_path.exists():
            return
        lines = self.spool_path.read_text().splitlines()
        sent = 0
        try:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    sent += 1
                    continue
                self.control.call("audit.record", event=record.get("event"), fields=record.get("fields"))
                sent += 1
        finally:
            rest = lines[sent:]
            if rest:
                self.spool_path.write_text("".join(r + "\n" for r in rest))
            else:
                self.spool_path.unlink(missing_ok=True)
