"""A provider's `/embeddings` answer -> Ollama's `/api/embed` or legacy `/api/embeddings` answer."""

from __future__ import annotations

import base64
import sys
from array import array

from fortress.translate.base import JSON, Clock, Counted, Headers, dumps, loads
from fortress.translate.errors import client_status, message_of, provider_message


def _vector(value: object) -> list[float] | None:
    """A float list, or the base64 little-endian float32 form some providers send whatever was asked."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        floats = array("f", base64.b64decode(value, validate=True))
        if sys.byteorder == "big":
            floats.byteswap()
        return floats.tolist()
    return None


class EmbedCodec(Counted):
    """Buffers the provider's JSON (it is one object) and answers in Ollama's shape at end()."""

    __slots__ = (
        "_body",
        "_clock",
        "_error_status",
        "_finished",
        "_legacy",
        "_model",
        "_started_ns",
    )

    def __init__(self, model: str, *, legacy: bool, clock: Clock) -> None:
        """`model` is the client's name (`P/M`); `legacy`: answer `/api/embeddings`, not `/api/embed`."""
        super().__init__()
        self._model = model
        self._legacy = legacy
        self._clock = clock
        self._started_ns = clock()
        self._body: list[bytes] = []
        self._error_status = 0
        self._finished = False

    def head(self, status: int, headers: Headers) -> tuple[int, bytes]:
        if status >= 400:
            self._error_status = status
            return client_status(status), JSON
        return 200, JSON

    def feed(self, data: bytes) -> bytes:
        self._body.append(data)
        return b""

    def end(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        body = b"".join(self._body)
        if self._error_status:
            return dumps({"error": provider_message(self._error_status, body)})
        try:
            answer = loads(body)
        except ValueError:
            return dumps({"error": "the provider's answer is not JSON"})
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            return dumps({"error": message_of(answer) or "the provider's answer has no embeddings"})
        items = sorted(
            (item for item in data if isinstance(item, dict)), key=lambda item: item.get("index", 0)
        )
        try:
            vectors = [_vector(item.get("embedding")) for item in items]
        except ValueError:
            vectors = [None]
        if any(vector is None for vector in vectors):
            return dumps({"error": "the provider's answer holds an embedding that is not a vector"})
        usage = answer.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        self.prompt_tokens = tokens if isinstance(tokens, int) else None
        self.completion_tokens = 0
        if self._legacy:
            return dumps({"embedding": vectors[0] if vectors else []})
        reply: dict = {"model": self._model, "embeddings": vectors}
        reply["total_duration"] = max(self._clock() - self._started_ns, 0)
        reply["load_duration"] = 0
        if self.prompt_tokens is not None:
            reply["prompt_eval_count"] = self.prompt_tokens
        return dumps(reply)

    def cut(self, message: str) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        if self._error_status:
            message = provider_message(self._error_status, b"".join(self._body))
        return dumps({"error": message})
