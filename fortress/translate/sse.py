"""An incremental text/event-stream parser: body bytes in as they arrive, complete events out.

Sans-IO (h11's style): `feed()` takes whatever a read returned, so an event may arrive split across
reads or many events in one; `close()` hands over what the end of the body completes. Line endings
may be LF, CRLF or CR (the SSE spec allows all three); comment lines (`: keep-alive`) and events
without a `data` field are skipped. Each event comes out as `(event_type, data, raw)`: `raw` is the
event's normalised bytes with its blank-line terminator, for relays that pass events through.
"""

from __future__ import annotations

Event = tuple[bytes, bytes, bytes]  # (event type or b"", data lines joined by b"\n", raw block)

_CR = 13


def _parse(block: bytes) -> Event | None:
    """One event block (its lines, without the blank line that ended it) -> an event, or None."""
    if block.startswith(b"data: ") and b"\n" not in block:  # the common case: one data line
        return b"", block[6:], block + b"\n\n"
    kind = b""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 58:  # b":" starts a comment
            continue
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            kind = value
    if not data:
        return None
    return kind, b"\n".join(data), block + b"\n\n"


class SSEParser:
    """Splits a growing buffer at blank lines; only the unfinished tail is kept between reads."""

    __slots__ = ("_buffer", "_held_cr")

    def __init__(self) -> None:
        self._buffer = b""
        self._held_cr = False  # a read ended with CR: it may be the first half of a CRLF

    def feed(self, data: bytes) -> list[Event]:
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if b"\r" in data:
            if data[-1] == _CR:
                data = data[:-1]
                self._held_cr = True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + data if self._buffer else data
        if buffer[:1] == b"\n":  # stray blank lines between events carry nothing
            buffer = buffer.lstrip(b"\n")
        events: list[Event] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            event = _parse(buffer[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
            while buffer[start : start + 1] == b"\n":
                start += 1
        self._buffer = buffer[start:] if start else buffer
        return events

    def close(self) -> list[Event]:
        """The body ended: complete lines still waiting for their blank line form a last event.

        The spec drops such an event; servers that end with `data: [DONE]\\n` and no blank line are
        common enough that a relay should not lose it. A line cut mid-way is dropped.
        """
        events = self.feed(b"\n") if self._held_cr else []
        tail, self._buffer = self._buffer, b""
        if tail.endswith(b"\n"):
            event = _parse(tail.rstrip(b"\n"))
            if event is not None:
                events.append(event)
        return events
