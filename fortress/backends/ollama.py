"""The `ollama` kind: an Ollama server, which speaks every route Fortress forwards.

Requests go as the client sent them and answers are relayed raw (no codec): the fast path. Two
exceptions, both on OpenAI routes: an alias without `/v1` (`/chat/completions`) is sent to its `/v1`
path, and a streamed `/v1` chat or completions request whose client did not ask for usage is sent
asking for it (`stream_options.include_usage`) with the OpenAIRelay codec hiding that extra chunk, so
the key's token budget is charged exactly (DESIGN §6.3). Health is GET /api/version; the inventory is
/api/tags (installed) and /api/ps (loaded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fortress.backends.kind import Probe, Rewrite, bearer_or_basic, counts_from_tail, register
from fortress.translate.base import dumps
from fortress.translate.relay import OpenAIRelay, ask_for_usage

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fortress.backends.client import BackendClient
    from fortress.backends.kind import Outgoing
    from fortress.pipeline.routes import Route

# /v1 routes whose streams carry usage only when asked for it
STREAMS_WITH_USAGE = frozenset(("/v1/chat/completions", "/v1/completions"))
# a codec reads the answer: it must come as plain bytes, whatever encodings the client accepts
CODEC_DROP = (b"accept-encoding:",)


class OllamaKind:
    name = "ollama"
    static_models = False
    manages_models = True

    def auth(self, credential: str, basic: str) -> tuple[tuple[str, str], ...]:
        return bearer_or_basic(credential, basic)

    def serves(self, route: Route) -> bool:
        return True

    def rewrite(self, req: Outgoing, model: str | None) -> Rewrite | None:
        route = req.route
        if not route.openai:
            return None  # the fast path: Ollama's own routes and /v1/messages, raw
        path = req.target_url
        alias = not path.startswith(b"/v1/")
        if alias:
            path = b"/v1" + path
        doc = req.doc
        if route.name in STREAMS_WITH_USAGE and doc is not None and doc.get("stream") is True:
            asking = dict(doc)  # the client's own stays as it came, for a retry elsewhere
            if not ask_for_usage(asking):
                relay = OpenAIRelay(client_wants_usage=False)
                return Rewrite(req.method, path, dumps(asking), codec=relay, drop=CODEC_DROP)
        return Rewrite(req.method, path, req.body) if alias else None

    def usage(self, tail: Iterable[bytes]) -> tuple[int | None, int | None, bool]:
        return counts_from_tail(tail)

    async def probe(self, client: BackendClient, models: bool) -> Probe:
        version = (await client.get("/api/version")).ok_json("/api/version")
        if not isinstance(version, dict) or not isinstance(version.get("version"), str):
            raise ValueError("/api/version: expected an object with a 'version' string")
        probe = Probe(ok=True, version=version["version"])
        if models:
            probe.installed = _models((await client.get("/api/tags")).ok_json("/api/tags"), "/api/tags")
            probe.loaded = _models((await client.get("/api/ps")).ok_json("/api/ps"), "/api/ps")
        return probe


def _models(payload: Any, path: str) -> list[dict]:
    """The list of /api/tags or /api/ps ({"models": null} is an empty one); entries not objects skipped."""
    if not isinstance(payload, dict) or not isinstance(payload.get("models", 0), list | None):
        raise ValueError(f"{path}: expected an object with a 'models' list")
    return [m for m in payload.get("models") or () if isinstance(m, dict)]


OLLAMA = register(OllamaKind())
