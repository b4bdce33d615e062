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
import json

from fortress.translate.base import JSON, Counted, Headers, dumps, header, is_event_stream
from fortress.translate.errors import client_status, provider_message
from fortress.translate.sse import SSEParser

_MODEL_KEY = b'"model"'
_SPACE = b" \t\r\n"
_NULL_USAGE = (b'"usage":null', b'"usage": null')


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


def rename_model(data: bytes, quoted: bytes) -> bytes:
    """`data` with the string value of its first `"model"` key replaced by `quoted` (a JSON string).

    In OpenAI's answers that key is the top-level one: inside strings a quote is escaped, so the
    bytes `"model"` cannot come from content. Returns `data` itself when there is nothing to replace.
    """
    at = data.find(_MODEL_KEY)
    if at < 0:
        return data
    i = _skip_space(data, at + len(_MODEL_KEY))
    if data[i : i + 1] != b":":
        return data
    i = _skip_space(data, i + 1)
    if data[i : i + 1] != b'"':
        return data
    end = i
    while True:
        end = data.find(b'"', end + 1)
        if end < 0:
            return data
        slashes = 0
        while data[end - 1 - slashes] == 92:  # backslashes before the quote: odd means escaped
            slashes += 1
        if not slashes % 2:
            break
    return b"".join((data[:i], quoted, data[end + 1 :]))


class OpenAIRelay(Counted):
    """Codec for `/v1` chat, completions and embeddings answers (SSE or JSON) relayed to an OpenAI client."""

    __slots__ = ("_body", "_content_type", "_error_status", "_hide", "_model", "_parser")

    def __init__(self, *, client_wants_usage: bool = True, model: str | None = None) -> None:
        """`client_wants_usage` from ask_for_usage(); `model` is the client's name for it, when it differs
        from the provider's (a provider model `P/M`), else None."""
        super().__init__()
        self._hide = not client_wants_usage
        self._model = dumps(model) if model else None
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
        if self._parser is None:
            self._body.append(data)
            return b""
        out = [self._event(event) for event in self._parser.feed(data)]
        return b"".join(out) if out else b""

    def end(self) -> bytes:
        if self._parser is not None:
            return b"".join([self._event(event) for event in self._parser.close()])
        body = b"".join(self._body)
        if self._error_status:
            return self._error(provider_message(self._error_status, body))
        if b'"usage"' in body:
            with contextlib.suppress(ValueError, AttributeError):
                self._count(json.loads(body).get("usage"))
        return rename_model(body, self._model) if self._model is not None else body

    def cut(self, message: str) -> bytes:
        if self._parser is not None:
            return b"data: " + self._error(message) + b"\n\n"
        return self._error(message)

    def _event(self, event: tuple[bytes, bytes, bytes]) -> bytes:
        kind, data, raw = event
        if b'"usage"' in data and not any(null in data for null in _NULL_USAGE):
            try:
                chunk = json.loads(data)
            except ValueError:
                chunk = None
            if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                self._count(chunk["usage"])
                if self._hide and not chunk.get("choices"):
                    return b""
        if self._model is None:
            return raw
        renamed = rename_model(data, self._model)
        if renamed is data:
            return raw
        lines = b"data: " + renamed.replace(b"\n", b"\ndata: ") + b"\n\n"
        return b"event: " + kind + b"\n" + lines if kind else lines

    @staticmethod
    def _error(message: str) -> bytes:
        return dumps({"error": {"message": message, "type": "api_error", "param": None, "code": None}})
