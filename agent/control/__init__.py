"""The agent's control socket for the technician's console (docs/console.md).

`start_control_server(pipeline, log_format)` is the one call the pipeline makes; whatever
goes wrong here is logged and the agent runs on without a console. The pipeline is handed in
as the interface this package defines (agent/control/target.py): the runtime depends on the
control package, never the other way.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.control.target import ConsoleTarget

log = logging.getLogger(__name__)


class ControlHandle:
    """What `Pipeline.shutdown` needs to stop the server and its log ring."""

    def __init__(self, server: Any, ring: Any):
        self.server = server
        self.ring = ring

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            self.ring.remove()


def start_control_server(pipeline: ConsoleTarget, log_format: str) -> ControlHandle | None:
    try:
        from agent.control.logring import LogRing
        from agent.control.ops import AgentOps
        from agent.control.protocol import socket_path
        from agent.control.server import ControlServer

        ring = LogRing(log_format).install()
        try:
            server = ControlServer(socket_path(pipeline.config.unit.state_dir),
                                   AgentOps(pipeline, ring.lines).handlers())
            server.start()
        except BaseException:
            ring.remove()
            raise
        return ControlHandle(server, ring)
    except Exception:
        log.exception("control socket not started; the technician console will not reach this agent")
        return None


def stop_control_server(handle: ControlHandle | None) -> None:
    if handle is None:
        return
    try:
        handle.stop()
    except Exception:
        log.exception("control socket did not stop cleanly")
