"""The one open source of something that reopens sources (a retrying source, the capture stage).

Why a class of its own: each reopen closes the old source, and the corrupt-frame count the
heartbeat reports must not fall back to zero with it. Both holders keep that rule here.
"""
from __future__ import annotations

from agent.capture.frames import FrameSource


class SourceSlot:
    """Holds at most one open source; counts corrupt frames across the sources it has held."""

    def __init__(self) -> None:
        self.source: FrameSource | None = None
        self._corrupt_before = 0  # corrupt frames counted by sources already closed

    @property
    def corrupt_frames(self) -> int:
        current = self.source.corrupt_frames if self.source is not None else 0
        return self._corrupt_before + current

    def close(self) -> None:
        """Close the held source (if any), keeping its corrupt-frame count."""
        if self.source is not None:
            self._corrupt_before += self.source.corrupt_frames
            try:
                self.source.close()
            finally:
                self.source = None
