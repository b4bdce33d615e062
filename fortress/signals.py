"""How a long-running process learns it must stop: SIGTERM or SIGINT sets an event its loop awaits."""

from __future__ import annotations

import asyncio
import signal


def stop_event() -> asyncio.Event:
    """The event SIGTERM/SIGINT set, from now on. Call it first, before listening: a signal that comes as
    soon as the port answers (a supervisor, a test) must reach the drain, not the default action, which
    kills the process without a log line."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
