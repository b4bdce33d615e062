"""The `openai` kind: an OpenAI-compatible provider (OpenRouter, DashScope, vLLM, llama.cpp, ...).

Its URL is the API's base URL as OpenAI's own clients take it, `/v1` included: requests go to
`<base>/chat/completions`, health and models are `<base>/models`. Its models are the configured ones,
exposed as "<backend>/<model>" (P/M) and sent under the provider's own name M (DESIGN §6.3):
- `/v1` chat, completions and embeddings (and their aliases without `/v1`) go to the provider with M
  in the body, streams asking for usage; the answer comes back through OpenAIRelay, which names the
  model P/M again, reads the usage and hides the usage chunk from a client that did not ask for it.
- Ollama's `/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings` are translated
  (fortress/translate) to the provider's OpenAI requests, and its answers back to Ollama's shapes;
  requests that need no model run (a load, an unload, an empty input) are answered without calling it.
- Everything else (model management, Anthropic's Messages) is refused with a clear message.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fortress.backends.kind import Probe, Refused, Rewrite, bearer_or_basic, counts_from_tail, register
from fortress.backends.ollama import CODEC_DROP, STREAMS_WITH_USAGE
from fortress.translate import OpenAIRelay, TranslationError, ask_for_usage, translate
from fortress.translate.base import dumps
from fortress.translate.requests import ROUTES

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fortress.backends.client import BackendClient
    from fortress.backends.kind import Outgoing
    from fortress.pipeline.routes import Route

# answers relayed through OpenAIRelay: the model renamed to the client's P/M, usage read
_RELAYED = frozenset(("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"))
# the translated request is Fortress's own JSON: the client's body headers do not describe it
_TRANSLATED_DROP = (*CODEC_DROP, b"accept:", b"content-type:", b"content-encoding:")
_JSON = b"Content-Type: application/json\r\n"


class OpenAIKind:
    name = "openai"
    static_models = True
    manages_models = False

    def auth(self, credential: str, basic: str) -> tuple[tuple[str, str], ...]:
        return bearer_or_basic(credential, basic)

    def serves(self, route: Route) -> bool:
        return route.openai or route.name in ROUTES

    def rewrite(self, req: Outgoing, model: str | None) -> Rewrite | None:
        route = req.route
        provider = req.target.name
        name = model or req.model or ""
        if name == req.model and name[: len(provider) + 1].lower() == f"{provider}/".lower():
            name = name[
                len(provider) + 1 :
            ]  # the client's P/M, passed on as it is when X-Fortress-Backend chose P
        if route.name in ROUTES:
            return _translated(req, provider, name)
        public = f"{provider}/{name}"
        if not route.openai:
            raise Refused(
                400,
                f"model '{public}' is served by the OpenAI-compatible provider {provider}: "
                f"{route.name} is not available for it",
            )
        path = req.target_url
        if path.startswith(b"/v1/"):
            path = path[3:]  # the provider's base URL carries its own /v1
        doc = req.doc
        if doc is None or route.name not in _RELAYED:  # the request renamed, the answer relayed raw
            body = dumps({**doc, "model": name}) if doc is not None and name != req.model else req.body
            return Rewrite(req.method, path, body)
        doc = {**doc, "model": name}
        wants_usage = ask_for_usage(doc) if route.name in STREAMS_WITH_USAGE else True
        relay = OpenAIRelay(client_wants_usage=wants_usage, model=public)
        return Rewrite(req.method, path, dumps(doc), codec=relay, drop=CODEC_DROP)

    def usage(self, tail: Iterable[bytes]) -> tuple[int | None, int | None, bool]:
        return counts_from_tail(tail)

    async def probe(self, client: BackendClient, models: bool) -> Probe:
        listing = (await client.get("/models")).ok_json("/models")
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise ValueError("/models: expected an object with a 'data' list")
        names = [{"name": m["id"]} for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        return Probe(ok=True, installed=names)


def _translated(req: Outgoing, provider: str, model: str) -> Rewrite:
    """An Ollama request for P/M as the provider's OpenAI request, with the codec for its answer."""
    try:
        translation = translate(req.route.name, req.doc or {}, provider, model)
    except TranslationError as error:
        raise Refused(error.status, error.message) from None
    if translation.local:
        return Rewrite(b"POST", b"", None, local=translation.local_reply(time.time_ns))
    path = translation.path.encode()
    codec = translation.codec(time.time_ns)
    return Rewrite(b"POST", path, translation.body, _JSON, codec, drop=_TRANSLATED_DROP)


OPENAI = register(OpenAIKind())
