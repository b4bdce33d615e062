"""An incremental text/event-stream parser: body bytes in as they arrive, complete events out.

Sans-IO (h11's style): `feed()` takes whatever a read returned, so an event may arrive split across
reads or many events in one; `close()` hands over what the end of the body completes. Line endings
may be LF, CRLF or CR (the SSE spec allows all three). Each block comes out as `(event_type, data,
raw)`: `raw` is its normalised bytes with the blank line that ends it, for relays that pass blocks
through. A block with no `data` field (a `: keep-alive` comment, a lone `id:` or `retry:`) is not
a message: its data is None, and it is there only so a relay can forward it.
"""

from __future__ import annotations

Event = tuple[bytes, bytes | None, bytes]  # (event type or b"", data lines joined by b"\n", raw block)

_CR = 13


def _parse(block: bytes) -> Event:
    """One block (its lines, without the blank line that ended it) -> an event."""
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
    return kind, b"\n".join(data) if data else None, block + b"\n\n"


class SSEParser:
    """Splits a growing buffer at blank lines; only the unfinished tail is kept between reads."""

    __slots__ = ("_buffer", "_held_cr", "pending")

    def __init__(self) -> None:
        self._buffer = b""
        self._held_cr = False  # a read ended with CR: it may be the first half of a CRLF
        self.pending = False  # an event has begun and not ended (so the next bytes continue it)

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
            if buffer.startswith(b"data: ", start) and buffer.find(b"\n", start, end) < 0:  # one data line
                events.append((b"", buffer[start + 6 : end], buffer[start : end + 2]))
            else:
                events.append(_parse(buffer[start:end]))
            start = end + 2
            while buffer[start : start + 1] == b"\n":
                start += 1
        self._buffer = buffer[start:] if start else buffer
        self.pending = bool(self._buffer) or self._held_cr
        return events

    def close(self) -> list[Event]:
        """The body ended: complete lines still waiting for their blank line form a last event.

        The spec drops such an event; servers that end with `data: [DONE]\\n` and no blank line are
        common enough that a relay should not lose it. A line cut mid-way is dropped.
        """
        events = self.feed(b"\n") if self._held_cr else []
        tail, self._buffer = self._buffer, b""
        self.pending = False
        if tail.endswith(b"\n"):
            events.append(_parse(tail.rstrip(b"\n")))
        return events
