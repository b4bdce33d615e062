"""What a backend kind hands the exchange when a response must be rewritten instead of relayed raw."""

from __future__ import annotations

from typing import Protocol

Headers = list[tuple[bytes, bytes]]


class Codec(Protocol):
    """Turns one backend response into the client's response. Sans-IO: no sockets, no clock reads
    except through what the constructor was given. One instance per exchange attempt.

    The exchange calls, in order: head() once, feed() for every piece of the backend's body with the
    HTTP framing already removed (chunk sizes stripped, Content-Length honoured), then exactly one of
    end() (the body ended normally) or cut() (the backend failed mid-way). Whatever they return is
    written to the client in order, framed by Fortress itself (chunked to HTTP/1.1 clients,
    close-delimited to HTTP/1.0 ones): a codec never emits HTTP framing.
    """

    prompt_tokens: int | None  # for accounting, read after end()/cut()
    completion_tokens: int | None

    def head(self, status: int, headers: Headers) -> tuple[int, bytes]:
        """The backend's status and headers -> (the client's status, the client's Content-Type)."""

    def feed(self, data: bytes) -> bytes:
        """Body bytes in, client body bytes out (b"" when nothing is complete yet)."""

    def end(self) -> bytes:
        """The backend's body is complete: the last client bytes (e.g. Ollama's final done:true object,
        or a whole translated non-streamed answer)."""

    def cut(self, message: str) -> bytes:
        """The backend failed after head(): the bytes that end the client's stream cleanly (one
        {"error": ...} NDJSON line, an SSE error event, ...)."""
