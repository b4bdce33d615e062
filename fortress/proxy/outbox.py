"""The writes of one event-loop turn, sent back to back when the turn's callbacks are done.

Why: a write to a peer that sleeps in epoll (the backend, the client) makes the kernel wake it, and
that wake-up is paid by the writer: on a virtual machine it costs more than the write itself. One turn
of a busy proxy handles a dozen reads, and writing as each is handled spaces the writes ~50 µs apart,
long enough for the peer to fall asleep between them, so each wakes it again. Sent together at the end
of the turn, the first write wakes the peer and the rest find it awake. On W1 (bench/RESULTS.md) this
took the proxy's kernel CPU per request from ~30 to ~13 µs and its CPU per request down by ~16%.

Bounded: past HOLD_BYTES queued, the outbox sends at once. Big writes gain nothing from waiting, and
backpressure must act at once: a transport that cannot take more pauses its writer's source
(pause_writing), and deferred, that pause would come only after libuv had read up to 32 more pieces from
the source in the same turn (an upload's 256 MiB grew the proxy by 7.7 MiB that way).

Every write to a connection goes through the one outbox, so a connection's bytes keep their order. A
write queued right after another to the same connection joins it (below JOIN_BELOW), so a head and the
answer's last bytes written apart in one turn (a translated answer) leave in one send(), not two. A
connection that closes flushes the outbox first (its last bytes go before the close), and bytes for a
connection that is closing by the time they would go are dropped, as the transport itself would.

`first`, when set, runs at the start of every burst. On a cluster node it is the usage pipe's
hand-over: the usage rows recorded during the turn reach the usage producer before any of the turn's
bytes reach a client (fortress.proxy.usage_pipe).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

HOLD_BYTES = 64 * 1024  # a transport's default high-water mark
JOIN_BELOW = 16 * 1024  # a write queued right after a smaller one to the same transport joins it


class Outbox:
    __slots__ = ("first", "held", "items", "soon")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # the turn's flush: it runs after this turn's I/O callbacks, before the next poll
        self.soon = partial(loop.call_soon, self.flush)
        self.items: list[tuple[asyncio.WriteTransport, bytes]] = []
        self.held = 0  # bytes in `items`
        self.first: Callable[[], None] | None = None

    def write(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        items = self.items
        if not items:
            self.soon()
            items += ((transport, data),)
        elif items[-1][0] is transport and len(items[-1][1]) < JOIN_BELOW:  # one send() (a head, its end)
            items[-1] = (transport, items[-1][1] + data)
        else:
            items += ((transport, data),)
        held = self.held = self.held + len(data)
        if held > HOLD_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.first is not None:
            self.first()
        items, self.items = self.items, []
        self.held = 0
        for transport, data in items:
            if not transport.is_closing():
                transport.write(data)
