"""What the control socket needs from the agent it serves, defined here so that the control
package does not import the runtime that starts it (runtime -> control, never back;
tests/test_import_graph.py). `agent.runtime.pipeline.Pipeline` is the one implementation."""
from __future__ import annotations

from typing import Any, Protocol

from agent.audit.log import AuditLog
from agent.config.schema import DeviceConfig
from agent.control.hooks import AgentHooks
from agent.delivery.mqtt_link import DestinationCredentials
from agent.policy.hotlist import HotlistStore
from agent.policy.store import PolicyStore


class ConsoleTarget(Protocol):
    """A running pipeline as the console's operations see it (agent/control/ops.py)."""

    config: DeviceConfig
    audit: AuditLog
    policies: PolicyStore
    hotlists: HotlistStore
    capture: Any      # the capture stage: frames_read, frames (its queue), latest
    recognize: Any    # the recognition stage: its recognizer
    hooks: AgentHooks
    started_at: float

    @property
    def stages(self) -> tuple[Any, ...]:
        """The pipeline's stages; one whose `fatal` event is set is failing."""
        ...

    def stats(self) -> dict[str, Any]:
        """The figures of the pipeline's `stats()` (frames, reads, queues, delivery, disk)."""
        ...

    def destination_credentials(self) -> dict[str, DestinationCredentials]:
        """The MQTT credentials of the current config's destinations, by destination id."""
        ...
