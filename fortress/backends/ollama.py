"""The `ollama` kind: an Ollama server, which speaks every route Fortress forwards.

Requests go as the client sent them and answers are relayed raw (no codec): the fast path. Health is
GET /api/version; the inventory is /api/tags (installed) and /api/ps (loaded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fortress.backends.kind import Probe, Rewrite, bearer_or_basic, counts_from_tail, register

if TYPE_CHECKING:
    from fortress.backends.client import BackendClient
    from fortress.backends.kind import Outgoing
    from fortress.pipeline.routes import Route


class OllamaKind:
    name = "ollama"
    static_models = False
    manages_models = True

    def auth(self, credential: str, basic: str) -> tuple[tuple[str, str], ...]:
        return bearer_or_basic(credential, basic)

    def serves(self, route: Route) -> bool:
        return True

    def rewrite(self, req: Outgoing, model: str | None) -> Rewrite | None:
        return None

    def usage(self, tail: list[bytes]) -> tuple[int | None, int | None, bool]:
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
