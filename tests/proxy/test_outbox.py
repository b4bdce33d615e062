"""The outbox (fortress/proxy/outbox.py) on a real socket: a turn's writes leave together at its end,
and `first` runs before any of them (a cluster node hands its usage rows over there)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from fortress.proxy.outbox import HOLD_BYTES, JOIN_BELOW, Outbox


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


async def test_past_the_bound_it_sends_at_once_so_backpressure_acts_at_once() -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    paused: list[bool] = []

    class Source(asyncio.Protocol):
        def pause_writing(self) -> None:
            paused.append(True)

    transport, _ = await loop.connect_accepted_socket(Source, ours)
    out = Outbox(loop)
    try:
        out.write(transport, b"x" * 1000)
        assert not _ready(theirs)  # small: held for the turn's end
        piece = b"y" * (HOLD_BYTES // 2)
        out.write(transport, piece)
        out.write(transport, piece)  # past the bound: everything queued goes now, in order
        assert out.items == [] and out.held == 0
        got = b""
        while len(got) < 1000 + HOLD_BYTES:
            await asyncio.sleep(0.01)
            got += _drain(theirs)
        assert got == b"x" * 1000 + piece + piece
        for _ in range(64):  # nobody reads: the transport fills and pauses its source during write()
            out.write(transport, b"z" * (HOLD_BYTES + 1))
            if paused:
                break
        assert paused  # at once, inside write(), not at the turn's end
    finally:
        transport.abort()
        theirs.close()
        await asyncio.sleep(0)


def _ready(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def _drain(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


class _Recorder(asyncio.Transport):
    """A transport that keeps each write() it is given, to count them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def test_consecutive_writes_to_one_transport_leave_as_one_write_in_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        client, backend = _Recorder(), _Recorder()
        out = Outbox(loop)
        for transport, data in ((client, b"head "), (client, b"body"), (backend, b"GET"), (client, b" end")):
            out.write(transport, data)
        out.flush()
        assert client.writes == [b"head body", b" end"]  # merged while consecutive, never reordered
        assert backend.writes == [b"GET"]
        big = b"x" * JOIN_BELOW
        out.write(client, big)
        out.write(client, b"after")  # not copied onto a big write: two writes, still in order
        out.flush()
        assert client.writes[2:] == [big, b"after"]
    finally:
        loop.close()
