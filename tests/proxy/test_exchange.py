"""The real Exchange, Pool, UpstreamProtocol and FlowControl driven without sockets: the client side is
an in-memory Downstream, backend connections are in-memory transports whose bytes each test scripts.
Retry before the first byte, cut mid-stream, first-byte and idle timeouts, the client leaving in every
state, backpressure both ways, Content-Length overruns, and the codec hook."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import pytest

from fortress.backends.target import Target
from fortress.config import Config
from fortress.pipeline import routes
from fortress.pipeline.chain import Admit
from fortress.proxy.exchange import Exchange
from fortress.proxy.flow import FlowControl
from fortress.proxy.outbox import Outbox
from fortress.proxy.pool import Pool
from fortress.proxy.states import State
from fortress.proxy.upstream import UpstreamProtocol
from fortress.proxy.worker import Worker
from fortress.state.snapshot import BackendRecord, Policy, Snapshot

from .upper import UpperKind

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
LINE = b'{"response":"hi","done":false}\n'
LAST = b'{"response":"","done":true,"prompt_eval_count":3,"eval_count":5}\n'


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Client:
    """A Downstream that records what the exchange asks of the client side."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.paused = False
        self.ended: bool | None = None  # done(keep_alive) once the response is over

    def write(self, data: bytes) -> None:
        self.out += data

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def done(self, keep_alive: bool) -> None:
        assert self.ended is None, "done() twice"
        self.ended = keep_alive


class Wire(asyncio.Transport):
    """A backend connection's transport in memory: what the proxy sent, whether reading is paused."""

    def __init__(self, protocol: UpstreamProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.sent = bytearray()
        self.closing = False
        self.paused = 0  # pause_reading calls not matched by resume_reading

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.paused -= 1


class Backends:
    """The pool's connector: each new connection is an UpstreamProtocol on a Wire, kept for the test."""

    def __init__(self, out: Outbox) -> None:
        self.out = out
        self.conns: list[UpstreamProtocol] = []

    async def __call__(self, target: Target) -> UpstreamProtocol:
        up = UpstreamProtocol(target.name, self.out)
        up.connection_made(Wire(up))
        self.conns.append(up)
        return up

    def wire(self, i: int = -1) -> Wire:
        """The connection's wire as it stands at the end of this loop turn (the outbox sent)."""
        self.out.flush()
        return self.conns[i].transport  # type: ignore[return-value]


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.005)


Setup = tuple[Worker, Backends]
MakeExchange = Callable[..., Exchange]


@pytest.fixture
async def world() -> Setup:
    cfg = Config()
    backends = (BackendRecord("a", "http://127.0.0.1:1"), BackendRecord("b", "http://127.0.0.1:2"))
    snapshot = Snapshot(version=1, keys={}, backends=backends, policy=Policy.build(cfg, {}))
    w = Worker(cfg, snapshot, asyncio.get_running_loop())
    connector = Backends(w.outbox)
    w.pool = Pool(w.loop, w.outbox, connect=connector)
    return w, connector


def exchange(w: Worker, body: bytes | None = b'{"model":"llama3"}', **kw: object) -> tuple[Exchange, Client]:
    """An exchange as the client side would start it (keyword overrides: path, http10, ...)."""
    path = str(kw.pop("path", "/api/generate"))
    client = Client()
    admit = Admit(route=routes.classify(path), key=None, model="llama3")
    options: dict = {
        "http10": False,
        "keep_alive": True,
        "streaming_body": body is None,
        "chunked_body": False,
    }
    options.update(kw)
    ex = Exchange(
        w, client, admit, b"POST", path, path.encode(), [], b"rid", body=body, t0=time.monotonic(), **options
    )
    return ex, client


async def sent(ex: Exchange) -> None:
    """Start the exchange and let the pool open its connection."""
    ex.start()
    await until(lambda: ex.state is State.SENT)


def outstanding(w: Worker) -> dict[str, int]:
    return {row["name"]: row["outstanding"] for row in w.router.export()}


async def test_a_streamed_response_is_relayed_byte_for_byte_and_the_connection_pooled(world: Setup) -> None:
    w, backends = world
    ex, client = exchange(w)
    await sent(ex)
    assert backends.wire().sent.startswith(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:")
    up = backends.conns[0]
    up.data_received(OK_HEAD + chunk(LINE))
    assert ex.state is State.RELAYING and client.out.endswith(chunk(LINE))
    up.data_received(chunk(LAST) + b"0\r\n\r\n")
    assert ex.state is State.DONE and client.ended is True
    assert client.out.endswith(chunk(LAST) + b"0\r\n\r\n") and b"X-Request-ID: rid\r\n" in client.out
    assert repr(w.pool).startswith("<Pool [Connections: 0 active, 1 idle | created 1, reused 0")
    assert outstanding(w) == {"a": 0, "b": 0} and w.requests == 1 and w.errors == 0


async def test_retry_before_the_first_byte_goes_to_the_other_backend(world: Setup) -> None:
    w, backends = world
    ex, client = exchange(w)
    await sent(ex)
    first = backends.conns[0]
    first.data_received(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    assert ex.state is State.CHOOSING and client.out == b""  # nothing reached the client
    await until(lambda: ex.state is State.SENT)  # after the backoff pause
    second = backends.conns[1]
    assert {first.backend, second.backend} == {"a", "b"}
    second.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert ex.state is State.DONE and client.out.endswith(b"\r\n\r\nok") and b" 503 " not in client.out
    assert ex.tried == [first.backend, second.backend]
    assert repr(w.pool).startswith("<Pool [Connections: 0 active, 1 idle | created 2")  # the 503 one closed
    assert outstanding(w) == {"a": 0, "b": 0}


async def test_a_backend_dying_mid_stream_ends_the_stream_with_an_error_line(world: Setup) -> None:
    w, backends = world
    ex, client = exchange(w)
    await sent(ex)
    up = backends.conns[0]
    up.data_received(OK_HEAD + chunk(LINE))
    up.connection_lost(None)
    assert ex.state is State.CUT and client.ended is True  # framing intact: the client connection stays
    line = b'{"error": "backend %s closed the connection"}\n' % up.backend.encode()
    assert client.out.endswith(chunk(line) + b"0\r\n\r\n")
    assert ex.error and w.errors == 1 and outstanding(w)[up.backend] == 0


async def test_a_cut_inside_a_chunk_closes_the_client_connection(world: Setup) -> None:
    w, backends = world
    ex, client = exchange(w)
    await sent(ex)
    backends.conns[0].data_received(OK_HEAD + b"40\r\n" + b"x" * 10)
    backends.conns[0].connection_lost(None)
    assert ex.state is State.CUT and client.ended is False and client.out.endswith(b"x" * 10)


async def test_first_byte_timeout_answers_504(world: Setup) -> None:
    w, backends = world
    ex, client = exchange(w)
    await sent(ex)
    now = time.monotonic()
    deadline = ex.deadline(now)
    assert deadline == pytest.approx(now + w.routing.first_byte_timeout_s, abs=5)
    ex.expire(deadline + 1)
    assert ex.state is State.FAILED and client.out.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert b"did not answer in time" in client.out and client.ended is True
    assert backends.wire().closing and "0 active, 0 idle" in repr(w.pool)


async def test_idle_timeout_mid_stream_cuts(world: Setup) -> None:
    w, backends = world
    ex, client = exchange(w)
    await sent(ex)
    backends.conns[0].data_received(OK_HEAD + chunk(LINE))
    now = time.monotonic()
    assert ex.deadline(now) == now + w.routing.idle_timeout_s  # the stall clock starts at this look
    backends.conns[0].data_received(chunk(LINE))
    assert ex.deadline(now + 1) == now + 1 + w.routing.idle_timeout_s  # data moved it
    ex.expire(now + 1 + w.routing.idle_timeout_s + 1)
    assert ex.state is State.CUT and b"idle timeout" in client.out and client.ended is True


async def test_a_slow_client_pauses_the_backend_and_is_not_a_silent_backend(world: Setup) -> None:
    w, backends = world
    ex, _ = exchange(w)
    await sent(ex)
    up = backends.conns[0]
    up.data_received(OK_HEAD + chunk(LINE))
    ex.client_blocked(True)
    ex.client_blocked(True)  # idempotent
    assert up.flow is not None and up.flow.read_paused and backends.wire().paused == 1
    assert ex.deadline(time.monotonic()) == float("inf")
    ex.client_blocked(False)
    assert not up.flow.read_paused and backends.wire().paused == 0


async def test_an_upload_waits_for_its_connection_with_the_client_paused(world: Setup) -> None:
    w, backends = world
    ex, client = exchange(w, body=None, path="/api/blobs/sha256:" + "0" * 64)
    ex.start()
    ex.send_body(b"part one ")
    assert ex.state is State.CONNECTING and client.paused  # held until the backend connection exists
    await until(lambda: ex.state is State.SENT)
    ex.send_body(b"part two")
    assert not client.paused and backends.wire().sent.endswith(b"\r\n\r\npart one part two")


@pytest.mark.parametrize("split", [0, 3, 5])
async def test_bytes_past_content_length_never_reach_the_client(world: Setup, split: int) -> None:
    """The surplus comes with the head (0), mid-body (3) or after the body is complete (5)."""
    w, backends = world
    ex, client = exchange(w)
    await sent(ex)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA BYTES"
    cut = answer.index(b"hello") + split
    backends.conns[0].data_received(answer[:cut])
    backends.conns[0].data_received(answer[cut:])
    assert ex.state is State.DONE and client.out.endswith(b"\r\n\r\nhello") and b"EXTRA" not in client.out
    assert backends.wire().closing and w.pool.acquire(backends.conns[0].backend) is None  # never reused


# A backend head with every kind of line the client must not get, in odd cases, between lines it must get.
MIXED_HEAD = (
    b"HTTP/1.1 200 Fine\r\nServer: sim\r\nconnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
    b"ACCESS-CONTROL-ALLOW-ORIGIN: *\r\nX-Keep:a:b \r\nTE: trailers\r\nX-Te: 1\r\n"
    b"Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\nAccess-Control-Max-Age: 60\r\n"
    b"Proxy-Connection: x\r\nUpgrade: h2c\r\n"
    b"Date: Mon, 30 Nov 2026 00:00:00 GMT\r\nAccess-Control-Allow-Originals: kept\r\n\r\n"
)


@pytest.mark.parametrize("http10", [False, True])
async def test_the_client_gets_the_backend_head_without_hop_and_cors_lines(
    world: Setup, http10: bool
) -> None:
    """Fortress's own status line, the backend's other lines as they came (no second Date), then its own;
    an HTTP/1.1 client keeps the chunked framing, an HTTP/1.0 one gets the body decoded and a close."""
    w, backends = world
    ex, client = exchange(w, http10=http10)
    await sent(ex)
    backends.conns[0].data_received(MIXED_HEAD + chunk(LAST) + b"0\r\n\r\n")
    head, _, body = bytes(client.out).partition(b"\r\n\r\n")
    kept = [
        b"HTTP/1.1 200 OK",
        b"Server: sim",
        b"X-Keep: a:b ",
        b"X-Te: 1",
        *([] if http10 else [b"Transfer-Encoding: chunked"]),
        b"Date: Mon, 30 Nov 2026 00:00:00 GMT",
        b"Access-Control-Allow-Originals: kept",
        b"X-Request-ID: rid",
        *([b"Connection: close"] if http10 else []),
    ]
    assert head.split(b"\r\n") == kept
    assert body == (LAST if http10 else chunk(LAST) + b"0\r\n\r\n")
    assert backends.conns[0].headers[:2] == [(b"Server", b"sim"), (b"X-Keep", b"a:b ")]  # what a codec reads


async def test_a_head_without_date_gets_fortress_s(world: Setup) -> None:
    w, backends = world
    ex, client = exchange(w)
    await sent(ex)
    backends.conns[0].data_received(b"HTTP/1.1 200 OK\r\nX-Date: no\r\nContent-Length: 2\r\n\r\nok")
    head = bytes(client.out).partition(b"\r\n\r\n")[0]
    assert (
        head.count(b"\r\nDate: ") == 1
        and b"\r\nX-Date: no\r\nContent-Length: 2\r\nX-Request-ID: rid\r\n" in head
    )


async def test_the_codec_hook_decodes_frames_and_accounts(world: Setup) -> None:
    w, backends = world
    w.targets = {name: dataclasses.replace(t, kind=UpperKind()) for name, t in w.targets.items()}
    ex, client = exchange(w)
    await sent(ex)
    up = backends.conns[0]
    up.data_received(OK_HEAD + chunk(LINE[:10]))  # half a line: nothing to say yet
    assert ex.state is State.RELAYING and client.out.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    up.data_received(chunk(LINE[10:]) + chunk(LAST) + b"0\r\n\r\n")
    upper = b'{"response": "HI", "done": false}\n'
    last = b'{"response": "", "done": true, "prompt_eval_count": 3, "eval_count": 5}\n'
    assert client.out.endswith(chunk(upper + last) + b"0\r\n\r\n")  # what one read held: one call, one chunk
    assert ex.state is State.DONE and client.ended is True
    assert (ex.codec.prompt_tokens, ex.codec.completion_tokens) == (3, 5)  # type: ignore[union-attr]


async def test_the_codec_ends_a_cut_stream_and_keeps_the_framing(world: Setup) -> None:
    w, backends = world
    w.targets = {name: dataclasses.replace(t, kind=UpperKind()) for name, t in w.targets.items()}
    ex, client = exchange(w)
    await sent(ex)
    backends.conns[0].data_received(OK_HEAD + b"40\r\n" + b"x" * 10)  # mid-chunk on the backend side
    backends.conns[0].connection_lost(None)
    assert ex.state is State.CUT and client.ended is True  # Fortress frames the client side itself
    assert client.out.endswith(b'CLOSED THE CONNECTION"}\n\r\n0\r\n\r\n')


async def test_an_http10_client_gets_the_codec_output_close_delimited(world: Setup) -> None:
    w, backends = world
    w.targets = {name: dataclasses.replace(t, kind=UpperKind()) for name, t in w.targets.items()}
    ex, client = exchange(w, http10=True)
    await sent(ex)
    backends.conns[0].data_received(OK_HEAD + chunk(LINE) + chunk(LAST) + b"0\r\n\r\n")
    assert b"Connection: close\r\n\r\n" in client.out and b"Transfer-Encoding" not in client.out
    upper = b'{"response": "HI", "done": false}\n'
    last = b'{"response": "", "done": true, "prompt_eval_count": 3, "eval_count": 5}\n'
    assert client.out.endswith(b"\r\n\r\n" + upper + last)
    assert client.ended is False


# -- the client leaving, in every state ---------------------------------------------------------------
Step = Callable[[Exchange, Backends], Awaitable[None]]


async def _choosing(ex: Exchange, backends: Backends) -> None:  # between a failure and its retry
    await sent(ex)
    backends.conns[0].data_received(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")


async def _connecting(ex: Exchange, backends: Backends) -> None:
    ex.start()


async def _sent(ex: Exchange, backends: Backends) -> None:
    await sent(ex)


async def _relaying(ex: Exchange, backends: Backends) -> None:
    await sent(ex)
    backends.conns[0].data_received(OK_HEAD + chunk(LINE))


LEAVE_IN = [
    (State.CHOOSING, _choosing),
    (State.CONNECTING, _connecting),
    (State.SENT, _sent),
    (State.RELAYING, _relaying),
]


@pytest.mark.parametrize(("state", "reach"), LEAVE_IN)
async def test_the_client_leaving_is_recorded(world: Setup, state: State, reach: Step) -> None:
    w, backends = world
    ex, client = exchange(w)
    await reach(ex, backends)
    assert ex.state is state
    ex.client_lost()
    ex.client_lost()  # a second report changes nothing
    assert ex.state is State.GONE and ex.status in (499, 200) and client.ended is None
    assert w.requests == 1 and outstanding(w) == {"a": 0, "b": 0}
    await asyncio.sleep(0.2)  # a pending retry or connect finishes: it must not revive the exchange
    assert ex.state is State.GONE and all(c.closed or c.reusable for c in backends.conns)
    assert w.pool.active == 0 and all(up.transport.closing for up in backends.conns if up.ex is not None)  # type: ignore[union-attr]


async def test_the_client_leaving_while_queued_gives_the_slot_back(world: Setup) -> None:
    w, backends = world
    cfg = Config()
    capped = (BackendRecord("a", "http://127.0.0.1:1", max_concurrent=1),)
    w.swap(Snapshot(version=2, keys={}, backends=capped, policy=Policy.build(cfg, {})))
    first, _ = exchange(w)
    await sent(first)
    second, _ = exchange(w)
    second.start()
    assert second.state is State.WAITING
    second.client_lost()
    assert second.state is State.GONE and w.requests == 1
    backends.conns[0].data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert first.state is State.DONE and outstanding(w) == {"a": 0} and len(backends.conns) == 1


def test_flow_control_is_idempotent() -> None:
    class Transport(asyncio.Transport):
        calls: list[str] = []

        def pause_reading(self) -> None:
            self.calls.append("pause")

        def resume_reading(self) -> None:
            self.calls.append("resume")

        def is_closing(self) -> bool:
            return False

    transport = Transport()
    flow = FlowControl(transport)
    flow.pause_reading()
    flow.pause_reading()
    assert flow.read_paused and transport.calls == ["pause"]
    flow.resume_reading()
    flow.resume_reading()
    assert not flow.read_paused and transport.calls == ["pause", "resume"]
