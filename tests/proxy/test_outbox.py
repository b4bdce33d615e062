"""The outbox (fortress/proxy/outbox.py) on a real socket: a turn's writes leave together at its end,
and `first` runs before any of them (a cluster node hands its usage rows over there)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from fortress.proxy.outbox import Outbox


async def test_first_runs_before_any_byte_of_the_burst_leaves() -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    out = Outbox(loop)
    seen: list[bytes] = []

    def first() -> None:
        with contextlib.suppress(BlockingIOError):
            seen.append(theirs.recv(100))  # anything already out would show here
        seen.append(b"first")

    out.first = first
    try:
        out.write(transport, b"head ")
        out.write(transport, b"last bytes")
        assert seen == []  # held until the turn's callbacks are done
        await asyncio.sleep(0)
        assert seen == [b"first"] and theirs.recv(100) == b"head last bytes"
        out.write(transport, b"!")
        out.flush()  # a connection closing flushes at once: `first` runs then too
        assert seen == [b"first", b"first"] and theirs.recv(100) == b"!"
    finally:
        transport.close()
        theirs.close()
        await asyncio.sleep(0)
