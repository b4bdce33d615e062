"""Route classes (docs/architecture.md, stage 4): which paths exist, what each needs, what is never forwarded.

A pure table lookup on (method, path). Unknown /api/ paths are refused rather than forwarded, so a new
Ollama route is closed until someone decides it is safe. OpenAI's paths without `/v1` (`/models`,
`/chat/completions`, ...) are aliases: the same Route as their `/v1` twin (the backend gets `/v1/...`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from fortress.http.replies import Shape


class Kind(Enum):
    PUBLIC = "public"  # answered by Fortress without a key
    METRICS = "metrics"  # answered by Fortress: an admin-scope key, or an address in [metrics] allow
    OLLAMA = "ollama"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"  # the Messages API, which Ollama serves too
    NEVER = "never"  # account and cloud routes: never forwarded
    SEARCH = "search"  # web search, answered by Fortress itself (proxy/websearch.py); 404 until configured
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # the path pattern, used for blocked-endpoint matching and usage rows
    kind: Kind
    methods: frozenset[bytes]
    inspect: bool = False  # the JSON body must be read (model, validation)
    model_admin: bool = False  # model management: pull, push, create, copy, delete, blobs
    federated: bool = False  # answered by the worker itself: lists from every backend, /health, /auth
    metered: bool = False  # answers carry token counts (generation, embeddings) worth accounting
    shape: Shape = Shape.OLLAMA  # the error shape of answers Fortress gives on this route
    openai: bool = False  # kind is OPENAI, kept as a field: backend kinds ask on every request
    # a gated route forwarded to a backend (Ollama, OpenAI or Anthropic kind) with nothing else to check:
    # not /auth, not the blobs (a digest in the path); the chain skips the tests of the others with one
    plain: bool = False


_SHAPES = {Kind.OPENAI: Shape.OPENAI, Kind.ANTHROPIC: Shape.ANTHROPIC}


def _r(name: str, kind: Kind, methods: str, shape: Shape | None = None, **flags: bool) -> Route:
    shape = _SHAPES.get(kind, Shape.OLLAMA) if shape is None else shape
    methods_b = frozenset(m.encode() for m in methods.split())
    plain = flags.pop("plain", kind in (Kind.OLLAMA, Kind.OPENAI, Kind.ANTHROPIC))
    return Route(name, kind, methods_b, **flags, shape=shape, openai=kind is Kind.OPENAI, plain=plain)


HEALTH = _r("/health", Kind.PUBLIC, "GET HEAD", federated=True)  # public; detail for admin-scope keys
# IP trust sessions (chain.py, worker.py)
AUTH = _r("/auth", Kind.OLLAMA, "POST DELETE", federated=True, plain=False)


class _Paths(dict[str, Route]):
    """The paths that are routes as they are; any other path is classified by its prefix (answered, not
    kept, so that random paths cannot grow the table)."""

    __slots__ = ()

    def __missing__(self, path: str) -> Route:
        return _prefixed(path)


EXACT = _Paths(  # path -> route, for the paths that are routes as they are
    (r.name, r)
    for r in (
        _r("/", Kind.PUBLIC, "GET HEAD"),
        HEALTH,
        AUTH,
        _r("/metrics", Kind.METRICS, "GET HEAD"),
        _r("/api/version", Kind.OLLAMA, "GET HEAD", federated=True),
        _r("/api/tags", Kind.OLLAMA, "GET HEAD", federated=True),
        _r("/api/ps", Kind.OLLAMA, "GET", federated=True),
        _r("/api/show", Kind.OLLAMA, "POST", inspect=True),
        _r("/api/generate", Kind.OLLAMA, "POST", inspect=True, metered=True),
        _r("/api/chat", Kind.OLLAMA, "POST", inspect=True, metered=True),
        _r("/api/embed", Kind.OLLAMA, "POST", inspect=True, metered=True),
        _r("/api/embeddings", Kind.OLLAMA, "POST", inspect=True),
        _r("/api/pull", Kind.OLLAMA, "POST", inspect=True, model_admin=True),
        _r("/api/push", Kind.OLLAMA, "POST", inspect=True, model_admin=True),
        _r("/api/create", Kind.OLLAMA, "POST", inspect=True, model_admin=True),
        _r("/api/copy", Kind.OLLAMA, "POST", inspect=True, model_admin=True),
        _r("/api/delete", Kind.OLLAMA, "DELETE", inspect=True, model_admin=True),
        _r("/api/web_search", Kind.SEARCH, "POST", inspect=True),
        _r("/api/web_fetch", Kind.SEARCH, "POST", inspect=True),
        _r("/api/status", Kind.NEVER, "GET"),
        _r("/api/me", Kind.NEVER, "POST GET"),
        _r("/api/signout", Kind.NEVER, "POST GET"),
        _r("/v1/chat/completions", Kind.OPENAI, "POST", inspect=True, metered=True),
        _r("/v1/completions", Kind.OPENAI, "POST", inspect=True, metered=True),
        _r("/v1/embeddings", Kind.OPENAI, "POST", inspect=True, metered=True),
        _r("/v1/responses", Kind.OPENAI, "POST", inspect=True, metered=True),
        _r("/v1/models", Kind.OPENAI, "GET", federated=True),
        _r("/v1/messages", Kind.ANTHROPIC, "POST", inspect=True, metered=True),
    )
)
ALIASES = ("/models", "/chat/completions", "/completions", "/embeddings")  # OpenAI's paths without /v1
EXACT.update({alias: EXACT["/v1" + alias] for alias in ALIASES})
SHOW = EXACT["/api/show"]
BLOBS = _r("/api/blobs/*", Kind.OLLAMA, "HEAD POST", model_admin=True, plain=False)
V1_MODEL = _r("/v1/models/*", Kind.OPENAI, "GET", federated=True)
_NEVER_PREFIX = _r("/api/user/*", Kind.NEVER, "GET POST DELETE")
_EXPERIMENTAL = _r("/api/experimental/*", Kind.NEVER, "GET POST")
UNKNOWN_API = _r("/api/*", Kind.UNKNOWN, "")
UNKNOWN_V1 = _r("/v1/*", Kind.UNKNOWN, "", Shape.OPENAI)  # refused in OpenAI's shape, as under /v1/
UNKNOWN = _r("*", Kind.UNKNOWN, "")


# The route for a path (without query string); never raises. One subscript: an exact path (the usual
# request) costs no Python call.
classify: Callable[[str], Route] = EXACT.__getitem__


def _prefixed(path: str) -> Route:
    """The route for a path that is not a route as it is: by its prefix."""
    if path.startswith("/api/"):
        if path.startswith("/api/blobs/"):
            return BLOBS
        if path.startswith("/api/user/"):
            return _NEVER_PREFIX
        if path.startswith("/api/experimental/"):
            return _EXPERIMENTAL
        return UNKNOWN_API
    if path.startswith("/v1/"):
        return V1_MODEL if path.startswith("/v1/models/") and len(path) > 11 else UNKNOWN_V1
    if path.startswith("/models/") and len(path) > 8:
        return V1_MODEL
    return UNKNOWN
