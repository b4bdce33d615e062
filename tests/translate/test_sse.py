"""The incremental SSE parser: events split across reads, line endings, comments, the end of the body."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fortress.translate.sse import SSEParser

STREAM = (
    b": keep-alive\n\n"
    b'data: {"a":1}\n\n'
    b"event: ping\ndata: {}\n\n"
    b"data: first line\ndata: second line\n\n"
    b"id: 7\nretry: 100\n\n"  # no data: not an event
    b"data\n\n"  # a data field with no value
    b'data:{"b":"caf\xc3\xa9"}\n\n'  # no space after the colon
    b"data: [DONE]\n\n"
)
EXPECTED = [
    (b"", b'{"a":1}'),
    (b"ping", b"{}"),
    (b"", b"first line\nsecond line"),
    (b"", b""),
    (b"", b'{"b":"caf\xc3\xa9"}'),
    (b"", b"[DONE]"),
]


def parse(pieces: list[bytes]) -> list[tuple[bytes, bytes]]:
    parser = SSEParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    events += parser.close()
    return [(kind, data) for kind, data, _ in events if data is not None]


def test_whole_stream() -> None:
    assert parse([STREAM]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_crlf_and_cr_line_endings_even_split_between_cr_and_lf() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    assert parse([crlf]) == EXPECTED
    assert parse([crlf[i : i + 1] for i in range(len(crlf))]) == EXPECTED
    assert parse([STREAM.replace(b"\n", b"\r")]) == EXPECTED


def test_raw_is_the_event_with_its_terminator_and_comments_are_kept_for_relays() -> None:
    parser = SSEParser()
    events = parser.feed(b'data: {"x":1}\n\n: keep-alive\n\nevent: e\ndata: y\n\n')
    assert [raw for *_, raw in events] == [
        b'data: {"x":1}\n\n',
        b": keep-alive\n\n",
        b"event: e\ndata: y\n\n",
    ]
    assert [data for _, data, _ in events] == [b'{"x":1}', None, b"y"]


def test_partial_event_waits_for_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"x"') == []
    assert parser.feed(b":1}\n") == []
    assert parser.feed(b"\n") == [(b"", b'{"x":1}', b'data: {"x":1}\n\n')]


def test_end_of_body_completes_a_last_event_without_blank_line_but_drops_a_cut_line() -> None:
    parser = SSEParser()
    parser.feed(b"data: [DONE]\n")
    assert [data for _, data, _ in parser.close()] == [b"[DONE]"]
    parser = SSEParser()
    parser.feed(b'data: {"cut')
    assert parser.close() == []


def test_stray_blank_lines_between_events() -> None:
    assert parse([b"\n\n\ndata: a\n\n\n\n", b"\ndata: b\n\n"]) == [(b"", b"a"), (b"", b"b")]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30), st.booleans())
def test_any_split_gives_the_same_events(cuts: list[int], crlf: bool) -> None:
    stream = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert parse(pieces) == EXPECTED
