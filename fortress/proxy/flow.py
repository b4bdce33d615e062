"""Flow control of one transport: idempotent pause/resume of its reading, and whether its writes are paused.

The uvicorn FlowControl shape. The proxy couples two of these (docs/architecture.md, "Backpressure"): a
client that cannot take more (its transport calls pause_writing) pauses reading from the backend, and a
backend that does not take an upload fast enough pauses reading from the client.
"""

from __future__ import annotations

import asyncio


class FlowControl:
    __slots__ = ("_transport", "read_paused", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False  # set by the protocol's pause_writing/resume_writing callbacks

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
