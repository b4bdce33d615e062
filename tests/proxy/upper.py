"""A test kind whose codec upper-cases the generated text of an Ollama NDJSON stream: it proves the codec
hook (fortress/backends/codec.py) end to end without the real translation codecs.

`python -m tests.proxy.upper serve --config ...` runs the real `fortress` command with this kind
registered as type "upper" (an Ollama backend behind it).
"""

from __future__ import annotations

import json
import sys

from fortress.backends.codec import Headers
from fortress.backends.kind import Outgoing, Rewrite, register
from fortress.backends.ollama import OllamaKind


class UpperCodec:
    """NDJSON in, NDJSON out: each object's `response` (generate) or `message.content` (chat) upper-cased."""

    def __init__(self) -> None:
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.rest = b""

    def head(self, status: int, headers: Headers) -> tuple[int, bytes]:
        return status, b"application/x-ndjson"

    def feed(self, data: bytes) -> bytes:
        *lines, self.rest = (self.rest + data).split(b"\n")
        return b"".join(self._line(line) for line in lines if line.strip())

    def end(self) -> bytes:
        rest, self.rest = self.rest, b""
        return self._line(rest) if rest.strip() else b""

    def cut(self, message: str) -> bytes:
        return json.dumps({"error": message.upper()}).encode() + b"\n"

    def _line(self, line: bytes) -> bytes:
        obj = json.loads(line)
        if isinstance(obj.get("response"), str):
            obj["response"] = obj["response"].upper()
        if isinstance(obj.get("message"), dict) and isinstance(obj["message"].get("content"), str):
            obj["message"]["content"] = obj["message"]["content"].upper()
        if obj.get("done"):
            self.prompt_tokens = obj.get("prompt_eval_count")
            self.completion_tokens = obj.get("eval_count")
        return json.dumps(obj).encode() + b"\n"


class UpperKind(OllamaKind):
    name = "upper"

    def rewrite(self, req: Outgoing, model: str | None) -> Rewrite | None:
        if not req.route.metered:
            return None
        return Rewrite(req.method, req.target_url, req.body, b"", UpperCodec())


if __name__ == "__main__":
    register(UpperKind())
    from fortress.cli import main

    sys.exit(main(sys.argv[1:]))
