"""`/v1` answers relayed nearly as they are: the client's model name put back, usage read, and the
usage chunk Fortress asked for hidden from a client that did not ask for it.

Token accounting must be exact on every route (DESIGN §6.3), but an OpenAI stream carries usage only
when the request says `stream_options.include_usage`. So Fortress always asks (`ask_for_usage`), and
`OpenAIRelay` drops the final usage-only chunk (`"choices": []`) unless the client asked too. Events
are passed through byte for byte; only those carrying usage are decoded, and the `model` field is
rewritten in place (no re-encoding) when the client named the model differently (`P/M`).
"""

from __future__ import annotations

import contextlib

from fortress.translate.base import JSON, Counted, Headers, dumps, header, is_event_stream, loads
from fortress.translate.errors import client_status, provider_message
from fortress.translate.sse import Event, SSEParser

_MODEL_KEY = b'"model"'
_SPACE = b" \t\r\n"


def ask_for_usage(body: dict) -> bool:
    """Make a streamed chat or completions body ask for usage; True when the client had asked itself.

    The body changes (re-encode it) only when it streams and the client had not asked.
    """
    if body.get("stream") is not True:
        return True
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return True
    body["stream_options"] = (
        {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    )
    return False


def _skip_space(data: bytes, i: int) -> int:
    while i < len(data) and data[i] in _SPACE:
        i += 1
    return i


def _model_value(data: bytes) -> tuple[int, int, int] | None:
    """(key start, value start, value end) of the first `"model"` key with a string value."""
    at = data.find(_MODEL_KEY)
    if at < 0:
        return None
    i = _skip_space(data, at + len(_MODEL_KEY))
    if data[i : i + 1] != b":":
        return None
    i = _skip_space(data, i + 1)
    if data[i : i + 1] != b'"':
        return None
    end = i
    while True:
        end = data.find(b'"', end + 1)
        if end < 0:
            return None
        slashes = 0
        while data[end - 1 - slashes] == 92:  # backslashes before the quote: odd means escaped
            slashes += 1
        if not slashes % 2:
            return at, i, end + 1


def rename_model(data: bytes, quoted: bytes) -> bytes:
    """`data` with the string value of its first `"model"` key replaced by `quoted` (a JSON string).

    In OpenAI's answers that key is the top-level one: inside strings a quote is escaped, so the
    bytes `"model"` cannot come from content. Returns `data` itself when there is nothing to replace.
    """
    found = _model_value(data)
    if found is None:
        return data
    _, start, end = found
    return b"".join((data[:start], quoted, data[end:]))


class OpenAIRelay(Counted):
    """Codec for `/v1` chat, completions, embeddings and responses answers (SSE or JSON) relayed to an
    OpenAI client."""

    __slots__ = ("_body", "_content_type", "_error_status", "_hide", "_model", "_parser", "_renamed", "_seen")

    def __init__(self, *, client_wants_usage: bool = True, model: str | None = None) -> None:
        """`client_wants_usage` from ask_for_usage(); `model` is the client's name for it, when it differs
        from the provider's (a provider model `P/M`), else None."""
        super().__init__()
        self._hide = not client_wants_usage
        self._model = dumps(model) if model else None
        self._seen = b"\x00"  # the provider's `"model": "..."` bytes, once seen, and what replaces them
        self._renamed = b""
        self._parser: SSEParser | None = None
        self._body: list[bytes] = []
        self._error_status = 0
        self._content_type = JSON

    def head(self, status: int, headers: Headers) -> tuple[int, bytes]:
        if status in (401, 403):  # about the gateway's credential: never the client's business
            self._error_status = status
            return client_status(status), JSON
        if status < 400 and is_event_stream(headers):
            self._parser = SSEParser()
        self._content_type = header(headers, b"content-type") or JSON
        return status, self._content_type

    def feed(self, data: bytes) -> bytes:
        parser = self._parser
        if parser is None:
            self._body.append(data)
            return b""
        if not parser.pending and b"\r" not in data:  # whole events first, in one go when possible
            cut = data.rfind(b"\n\n") + 2
            if cut > 1:
                block = data[:cut] if cut < len(data) else data
                whole = self._whole(block)
                if whole is None:  # a stream's end carries the usage: the events before it, in one go
                    cut = block.rfind(b"\n\n", 0, max(block.rfind(b'"usage":{'), 0)) + 2
                    whole = self._whole(block[:cut]) if cut > 1 else None
                if whole is not None:
                    return whole + self.feed(data[cut:]) if cut < len(data) else whole
        out = [self._event(event) for event in parser.feed(data)]
        return b"".join(out) if out else b""

    def _whole(self, events: bytes) -> bytes | None:
        """Complete events relayed as one block: when none carries usage and every `model` key holds
        the name already seen (one replace renames them all). None: go event by event."""
        if events.count(b'"usage"') != events.count(b'"usage":null'):
            return None
        models = events.count(_MODEL_KEY) if self._model is not None else 0
        if not models:
            return events
        if models != events.count(self._seen):
            return None
        return events.replace(self._seen, self._renamed)

    def end(self) -> bytes:
        if self._parser is not None:
            return b"".join([self._event(event) for event in self._parser.close()])
        body = b"".join(self._body)
        if self._error_status:
            return self._error(provider_message(self._error_status, body))
        if b'"usage"' in body:
            with contextlib.suppress(ValueError, AttributeError):
                self._count(loads(body).get("usage"))
        return rename_model(body, self._model) if self._model is not None else body

    def cut(self, message: str) -> bytes:
        if self._parser is not None:
            return b"data: " + self._error(message) + b"\n\n"
        return self._error(message)

    def _event(self, event: Event) -> bytes:
        kind, data, raw = event
        if data is None:  # a keep-alive comment: the client's read timeout needs it too
            return raw
        if b'"usage"' in data and b'"usage":null' not in data and b'"usage": null' not in data:
            try:
                chunk = loads(data)
            except ValueError:
                chunk = None
            if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                self._count(chunk["usage"])
                if self._hide and not chunk.get("choices"):
                    return b""
            elif isinstance(chunk, dict) and isinstance(chunk.get("response"), dict):
                self._count(chunk["response"].get("usage"))  # /v1/responses: its response.completed event
        if self._model is None:
            return raw
        if self._seen not in raw:  # a name not seen before: learn where it is
            found = _model_value(data)
            if found is None:
                return raw
            key, start, end = found
            self._seen, self._renamed = data[key:end], data[key:start] + self._model
            if self._seen not in raw:  # key and value on two lines of a multi-line event: rebuild it
                lines = b"data: " + b"".join((data[:start], self._model, data[end:])).replace(
                    b"\n", b"\ndata: "
                )
                return b"event: " + kind + b"\n" + lines + b"\n\n" if kind else lines + b"\n\n"
        return raw.replace(self._seen, self._renamed, 1)

    @staticmethod
    def _error(message: str) -> bytes:
        return dumps({"error": {"message": message, "type": "api_error", "param": None, "code": None}})
