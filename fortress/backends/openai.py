"""The `openai` kind: an OpenAI-compatible provider (OpenRouter, DashScope, vLLM, llama.cpp, ...).

Its URL is the API's base URL as OpenAI's own clients take it, `/v1` included: requests go to
`<base>/chat/completions`, health and models are `<base>/models`. Its models are the configured ones,
exposed as "<backend>/<model>" and sent under the provider's own name. /v1 requests are relayed raw
after that rename; Ollama-API requests need translation (fortress/translate), until then refused.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from fortress.backends.kind import Probe, Refused, Rewrite, bearer_or_basic, counts_from_tail, register

if TYPE_CHECKING:
    from fortress.backends.client import BackendClient
    from fortress.backends.kind import Outgoing
    from fortress.pipeline.routes import Route


class OpenAIKind:
    name = "openai"
    static_models = True
    manages_models = False

    def auth(self, credential: str, basic: str) -> tuple[tuple[str, str], ...]:
        return bearer_or_basic(credential, basic)

    def serves(self, route: Route) -> bool:
        return route.openai

    def rewrite(self, req: Outgoing, model: str | None) -> Rewrite | None:
        if not self.serves(req.route):
            raise Refused(
                400, f"model '{req.model}' is served by an OpenAI-compatible provider: use the /v1 API"
            )
        path = req.target_url
        if path.startswith(b"/v1/"):
            path = path[3:]  # the provider's base URL carries its own /v1
        body = req.body
        if model and model != req.model and req.doc is not None:
            body = json.dumps({**req.doc, "model": model}).encode()
        return Rewrite(req.method, path, body)

    def usage(self, tail: list[bytes]) -> tuple[int | None, int | None, bool]:
        return counts_from_tail(tail)

    async def probe(self, client: BackendClient, models: bool) -> Probe:
        listing = (await client.get("/models")).ok_json("/models")
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise ValueError("/models: expected an object with a 'data' list")
        names = [{"name": m["id"]} for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        return Probe(ok=True, installed=names)


OPENAI = register(OpenAIKind())
