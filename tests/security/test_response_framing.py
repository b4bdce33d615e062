"""How a backend connection frames a response body (UpstreamProtocol's `left` and `chunked`, which decide
what reaches the client and whether the connection is reused) must be how llhttp frames it, on every head
llhttp accepts: a disagreement is a parser differential, how response smuggling starts. llhttp, fed a
body after the head, is the oracle."""

from __future__ import annotations

import asyncio
import contextlib

import httptools
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bench.profile import MemoryTransport
from fortress.proxy.outbox import Outbox
from fortress.proxy.upstream import UpstreamProtocol

BODY = b"2\r\nab\r\n0\r\n\r\n" + b"x" * 64  # a chunked body, and enough bytes for any declared length here


class _Oracle:
    """What llhttp made of the body: chunks, a length, or a body that lasts until the close."""

    def __init__(self) -> None:
        self.chunked = False
        self.length = -1
        self.seen = 0

    def on_chunk_header(self) -> None:
        self.chunked = True

    def on_body(self, body: bytes) -> None:
        self.seen += len(body)

    def on_message_complete(self) -> None:
        if self.length < 0:
            self.length = self.seen


def llhttp_framing(head: bytes) -> tuple[int, bool] | None:
    """(length or -1, chunked) as llhttp frames the body after `head`; None when it refuses the head."""
    oracle = _Oracle()
    parser = httptools.HttpResponseParser(oracle)
    try:
        parser.feed_data(head)
    except httptools.HttpParserError:
        return None
    with contextlib.suppress(httptools.HttpParserError):  # bytes past a declared length: a 2nd response
        parser.feed_data(BODY)
    return (-1, True) if oracle.chunked else (oracle.length, False)


class _Receiver:
    """Takes the head and whatever follows; the test reads the connection's framing afterwards."""

    def head(self, up: UpstreamProtocol, body: bytes) -> bool:
        return True

    def complete(self, up: UpstreamProtocol, last: bytes) -> None:
        pass

    def broken(self, message: str) -> None:
        raise AssertionError(message)


def fortress_framing(head: bytes) -> tuple[int, bool]:
    """(Content-Length or -1, chunked) as a backend connection reads them from `head`."""
    loop = asyncio.new_event_loop()
    try:
        up = UpstreamProtocol("backend", Outbox(loop))
        up.connection_made(MemoryTransport())
        up.send(_Receiver(), b"GET / HTTP/1.1\r\n\r\n", decoded=False, head_only=False)  # type: ignore[arg-type]
        up.data_received(head)
        return up.left if not up.chunked else -1, up.chunked
    finally:
        loop.close()


def _cased(name: str) -> st.SearchStrategy[bytes]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda ups: "".join(c.upper() if up else c for c, up in zip(name, ups, strict=True)).encode()
    )


_BLANK = st.sampled_from([b"", b" ", b"  ", b"\t", b" \t"])
_TOKEN = st.sampled_from(
    [b"chunked", b"CHUNKED", b"Chunked", b"gzip", b"identity", b"xchunked", b"chunkedx", b""]
)
_CODINGS = st.lists(st.tuples(_BLANK, _TOKEN, _BLANK), min_size=1, max_size=3).map(
    lambda parts: b",".join(a + t + b for a, t, b in parts)
)
_LENGTH = st.tuples(_BLANK, st.integers(0, 40), _BLANK).map(lambda p: p[0] + b"%d" % p[1] + p[2])
_LINE = st.one_of(
    st.tuples(_cased("transfer-encoding"), _CODINGS),
    st.tuples(_cased("content-length"), _LENGTH),
    st.tuples(
        st.sampled_from([b"X-Content-Length", b"Content-Type", b"X-Transfer-Encoding", b"Date"]), _LENGTH
    ),
    st.tuples(st.just(b"X-Note"), st.sampled_from([b"content-length: 3", b"transfer-encoding: chunked"])),
)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(_LINE, max_size=5), st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 404 X"])
)
@example([(b"Transfer-Encoding", b"chunked ")], b"HTTP/1.1 200 OK")  # spaces after the token: chunked
@example([(b"Transfer-Encoding", b"chunked\t")], b"HTTP/1.1 200 OK")  # a tab: not chunked (llhttp's rule)
@example([(b"Transfer-Encoding", b"xchunked")], b"HTTP/1.1 200 OK")  # not the token: until the close
@example([(b"Content-Length", b"0")], b"HTTP/1.0 200 OK")  # complete at once, then closed
@example([(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"gzip")], b"HTTP/1.1 200 OK")
def test_the_framing_read_from_the_head_is_llhttp_s(lines: list[tuple[bytes, bytes]], status: bytes) -> None:
    head = status + b"\r\n" + b"".join(name + b":" + value + b"\r\n" for name, value in lines) + b"\r\n"
    expected = llhttp_framing(head)
    assume(expected is not None)
    assert fortress_framing(head) == expected
