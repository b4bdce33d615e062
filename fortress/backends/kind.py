"""The BackendKind protocol: everything that differs between backend types lives behind it.

A kind is one stateless object per backend type (`ollama`, `openai`, ...), found by the type name in
the registry below. It owns how to authenticate to such a backend, how to probe its health and list
its models, which client routes it serves and how a request is rewritten for it (path, model name,
body, and the response codec: None keeps the raw relay, the fast path), and how token usage is read
from its answers. Nothing outside `fortress/backends/` compares a backend's type string: code asks
the kind. The layout and the life of a request are described in docs/architecture.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fortress.backends.client import BackendClient
    from fortress.backends.codec import Codec
    from fortress.backends.target import Target
    from fortress.pipeline.routes import Route

# Ollama's final object, OpenAI's usage, Anthropic's usage (its final message_delta event or object)
_COUNT = re.compile(
    rb'"(prompt_eval_count|eval_count|prompt_tokens|completion_tokens|input_tokens|output_tokens)":\s*(\d+)'
)
_PROMPT = {b"prompt_eval_count", b"prompt_tokens", b"input_tokens"}


class Refused(Exception):
    """The kind cannot carry this request (a route its backends do not speak): answer status+message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Outgoing(Protocol):
    """What a kind reads of a request to rewrite it (the proxy's exchange provides these)."""

    method: bytes
    route: Route
    target_url: bytes  # path and query as the client sent them (a query api_key removed)
    body: bytes | None  # None: the body streams through and cannot be rewritten
    doc: dict | None  # the parsed JSON body, when the body stage read it
    model: str | None  # the model name the client asked for (a provider's as "P/M")
    target: Target  # the backend this attempt goes to


class Rewrite:
    """A request as one backend must receive it, and the codec for its answer (None: raw relay).

    `local` set: the kind answers itself (200, application/json, that body) and no request is sent.
    """

    __slots__ = ("body", "codec", "drop", "headers", "local", "method", "path")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        body: bytes | None,
        headers: bytes = b"",
        codec: Codec | None = None,
        drop: tuple[bytes, ...] = (),
        local: bytes | None = None,
    ) -> None:
        self.method = method
        self.path = path  # below the backend URL's own path (Target.prefix is prepended)
        self.body = body
        self.headers = headers  # extra header lines, "Name: value\r\n" each
        self.codec = codec
        self.drop = drop  # client header lines not forwarded: lower-case "name:" prefixes
        self.local = local


@dataclass(slots=True)
class Probe:
    """One look at a backend: reachable or not, its version, and its models (installed and loaded)."""

    ok: bool
    latency_ms: float = 0.0
    version: str = ""
    error: str = ""
    installed: list[dict] = field(default_factory=list)
    loaded: list[dict] = field(default_factory=list)


class BackendKind(Protocol):
    name: str  # the `type` in config.toml and the database
    static_models: bool  # models come from configuration (exposed as "<backend>/<model>"), not polled
    manages_models: bool  # speaks Ollama's model management (pull, push, create, copy, delete, blobs)

    def auth(self, credential: str, basic: str) -> tuple[tuple[str, str], ...]:
        """Header lines that authenticate Fortress (a configured credential, else the URL's user:pass)."""

    def serves(self, route: Route) -> bool:
        """Whether requests on this client route can be sent to such a backend."""

    def rewrite(self, req: Outgoing, model: str | None) -> Rewrite | None:
        """The request for this backend (`model`: the name it knows the model by); None: send it as it
        came and relay the answer raw. Raises Refused when the backend cannot carry it."""

    def usage(self, tail: Iterable[bytes]) -> tuple[int | None, int | None, bool]:
        """(prompt tokens, completion tokens, ended with an error) from the last pieces of a raw answer."""

    async def probe(self, client: BackendClient, models: bool) -> Probe:
        """Health (and with `models`, the model lists); raises BackendError or ValueError on failure."""


def bearer_or_basic(credential: str, basic: str) -> tuple[tuple[str, str], ...]:
    """Authorization for Ollama and OpenAI-compatible backends: the credential as a Bearer token, else
    the Basic value from the URL's user:pass, else nothing."""
    value = f"Bearer {credential}" if credential else basic
    return (("Authorization", value),) if value else ()


def counts_from_tail(tail: Iterable[bytes]) -> tuple[int | None, int | None, bool]:
    """Token counts from the final object of a response (its last few pieces), without parsing JSON.

    Ollama's final NDJSON object carries prompt_eval_count/eval_count, OpenAI's usage object
    prompt_tokens/completion_tokens, Anthropic's input_tokens/output_tokens (in a stream, the final
    message_delta; Ollama versions whose message_delta lacks input_tokens leave the prompt uncounted);
    a last line that is an error object (or an SSE error event) marks a failed stream.
    """
    data = b"".join(tail)[-8192:]
    prompt = completion = None
    for name, value in _COUNT.findall(data):
        if name in _PROMPT:
            prompt = int(value)
        else:
            completion = int(value)
    last = data.rstrip().rpartition(b"\n")[2]
    failed = last.startswith((b'{"error"', b'data: {"error"', b'data: {"type":"error"'))
    return prompt, completion, failed


_REGISTRY: dict[str, BackendKind] = {}


def register(kind: BackendKind) -> BackendKind:
    """Add a kind under its type name (each kind module registers itself when imported)."""
    _REGISTRY[kind.name] = kind
    return kind


def kind_named(name: str) -> BackendKind:
    """The kind for a backend type name; ValueError naming the known types."""
    kind = _REGISTRY.get(name)
    if kind is None:
        raise ValueError(f"unknown backend type {name!r}: expected one of {', '.join(kind_names())}")
    return kind


def kind_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)
