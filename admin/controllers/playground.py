"""Chat and embedding playgrounds: the admin talks to the proxy with a key, like any client would.

Every call goes through admin/relay.py to the proxy, with the admin's stored playground key (an
ordinary key, kept encrypted by the admin) or a key pasted in the page (sent with each request, never
stored), so it is authenticated, limited and recorded in usage like other traffic.

Viewers may open the pages but not use them: the playground spends backend time on a key and, through
the relay, reaches the proxy from the admin's own address; both are things a read-only account must not
do. Every POST handler checks it (the login gate refuses them too).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from litestar import Controller, Request, get, post
from litestar.exceptions import PermissionDeniedException, SerializationException
from litestar.response import Response, Stream, Template

from admin import playground_input, projection, relay, scatter
from admin.playground_input import BadInput, Texts
from admin.web import cfg, db, ip, is_htmx, me, page, see_other
from admin.wordsets import DEFAULT, SETS
from fortress import keys as keyfmt
from fortress.state import repo, secretbox

MAX_CHAT_BODY = 64 * 1024 * 1024  # images travel base64 in the JSON, as they do to Ollama
FULL_TABLE_TEXTS = 24  # up to this many texts the similarity table shows every pair
PAGES = ("/playground", "/playground/embeddings")
_EMBEDDING_HINTS = ("embed", "minilm", "bge", "e5-", "gte", "bert", "arctic")


def _admins_only(request: Request) -> None:
    """Every POST checks the role itself (guards run before the login gate has named the admin)."""
    if me(request).role != "admin":
        raise PermissionDeniedException("Your account is read-only (viewer): the playground needs an admin.")


class PlaygroundController(Controller):
    path = "/playground"

    @get("/")
    async def chat_page(self, request: Request) -> Template:
        return await _page(request, "playground.html")

    @get("/embeddings")
    async def embeddings_page(self, request: Request) -> Template:
        return await _page(request, "playground_embeddings.html", chosen=DEFAULT)

    @post("/key")
    async def create_key(self, request: Request) -> Template | Response:
        _admins_only(request)
        data = await request.form()
        back = data.get("next") if data.get("next") in PAGES else PAGES[0]
        box = secretbox.for_config(cfg(request))
        try:
            await repo.create_playground_key(
                db(request),
                me(request).name,
                str(data.get("user", "")),
                str(data.get("label", "")).strip(),
                box,
                ip=ip(request),
            )
            pair = await repo.get_playground_key(db(request), me(request).name, box)
        except repo.RepoError as exc:
            return await _page(request, _template(back), status_code=400, error=str(exc))
        if pair is not None:  # so the page that follows can already list the key's models
            await relay.wait_for_key(await _proxy(request), pair[1])
        return see_other(request, back)

    @post("/key/forget")
    async def forget_key(self, request: Request) -> Template | Response:
        _admins_only(request)
        data = await request.form()
        back = data.get("next") if data.get("next") in PAGES else PAGES[0]
        try:
            await repo.forget_playground_key(db(request), me(request).name, ip=ip(request))
        except repo.RepoError as exc:
            return await _page(request, _template(back), status_code=400, error=str(exc))
        return see_other(request, back)

    @post("/models", status_code=200)
    async def models(self, request: Request) -> Response:
        """The models the chosen key may use, as JSON for the page's pickers."""
        _admins_only(request)
        try:
            key = await _key(request, await _json(request))
            found = await relay.models(await _proxy(request), key, ip(request))
        except (BadInput, relay.RelayError, repo.RepoError) as exc:
            return _error(str(exc))
        return Response({"models": [_model_entry(m) for m in found]})

    @post("/chat", status_code=200, request_max_body_size=MAX_CHAT_BODY)
    async def chat(self, request: Request) -> Response | Stream:
        """The proxy's NDJSON answer, streamed to the browser as it arrives.

        With "Search the web" on, the question goes first to the proxy's /api/web_search (with the
        same key), the results are given to the model as context, and the stream starts with one
        `{"sources": [{"title", "url"}]}` line the page shows as links under the answer.
        """
        _admins_only(request)
        try:
            data = await _json(request)
            body = playground_input.chat_body(data)
            key = await _key(request, data)
            proxy = await _proxy(request)
            head = b""
            if playground_input.wants_search(data):
                if not cfg(request).search.enabled:
                    raise BadInput("web search is not configured on this proxy ([search] in config.toml)")
                query = playground_input.search_query(body)
                found = playground_input.sources(
                    await relay.web_search(proxy, key, query, playground_input.SEARCH_RESULTS, ip(request))
                )
                playground_input.with_sources(body, found)
                shown = [{"title": s["title"], "url": s["url"]} for s in found]
                head = json.dumps({"sources": shown}).encode() + b"\n"
        except (BadInput, relay.RelayError, repo.RepoError) as exc:
            return _error(str(exc))
        stream = _after(head, relay.chat(proxy, key, body, ip(request)))
        # X-Accel-Buffering: an nginx in front of the admin must not hold the stream back
        return Stream(stream, media_type="application/x-ndjson", headers={"X-Accel-Buffering": "no"})

    @post("/embeddings", status_code=200)
    async def embeddings(self, request: Request) -> Template:
        _admins_only(request)
        data = await request.form()
        chosen = [s for s in data.getall("sets", []) if isinstance(s, str)]
        typed = str(data.get("texts", ""))
        picked = [str(data.get(f, "")).strip() for f in ("model_a", "model_b")]
        models = list(dict.fromkeys(m for m in picked if m))  # the same model twice is one
        draft = {"chosen": chosen, "typed": typed, "picked": picked}
        htmx = is_htmx(request)
        try:
            texts = playground_input.embed_texts(chosen, typed)
            for m in models or [""]:
                playground_input.model_name(m)
            key = await _key(request, {"key": data.get("key", "")})
            proxy = await _proxy(request)
            results = await asyncio.gather(*(_embed(proxy, key, m, texts, ip(request)) for m in models))
        except (BadInput, relay.RelayError, repo.RepoError) as exc:
            if htmx:  # htmx swaps only 2xx: the error travels in the fragment
                return page(request, "_embeddings_result.html", error=str(exc))
            return await _page(
                request, "playground_embeddings.html", status_code=400, error=str(exc), **draft
            )
        result = {"texts": texts, "results": results, "full_table": len(texts.texts) <= FULL_TABLE_TEXTS}
        if htmx:
            return page(request, "_embeddings_result.html", **result)
        return await _page(request, "playground_embeddings.html", **result, **draft)


async def _after(head: bytes, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`head` (when there is one), then the stream."""
    if head:
        yield head
    async for chunk in stream:
        yield chunk


@dataclass(frozen=True)
class ModelResult:
    """One model's view of the texts: plot, similarities and how well it separates the sets."""

    model: str
    dimensions: int
    svg: str
    explained: tuple[float, float]
    separation: projection.Separation
    set_means: list[list[float | None]]
    sim: projection.Matrix
    nearest: list[list[tuple[int, float]]]
    seconds: float  # the proxy round trip


async def _embed(proxy: relay.Proxy, key: str, model: str, texts: Texts, client_ip: str) -> ModelResult:
    started = time.perf_counter()
    vectors = await relay.embed(proxy, key, model, texts.texts, client_ip)
    seconds = time.perf_counter() - started
    # the maths is pure Python (~0.3 s for 150 texts x 768 dimensions): off the event loop
    return await asyncio.to_thread(_analyse, model, vectors, texts, seconds)


def _analyse(model: str, vectors: list[list[float]], texts: Texts, seconds: float) -> ModelResult:
    sim = projection.cosine_matrix(vectors)
    pca = projection.pca_2d(sim)
    title = f"{model}: {len(texts.texts)} texts projected on their first two principal components"
    return ModelResult(
        model=model,
        dimensions=len(vectors[0]),
        svg=scatter.scatter(title, pca.points, texts.texts, texts.groups, texts.sets),
        explained=pca.explained,
        separation=projection.separation(sim, texts.groups),
        set_means=projection.set_means(sim, texts.groups, len(texts.sets)),
        sim=sim,
        nearest=[projection.nearest(sim, i) for i in range(len(texts.texts))],
        seconds=seconds,
    )


async def _page(request: Request, template: str, /, status_code: int = 200, **context: object) -> Template:
    """A playground page with the key panel: the stored key, users to make one for, its models."""
    admin = me(request)
    stored = models_error = None
    found: list[dict] = []
    try:
        pair = await repo.get_playground_key(db(request), admin.name, secretbox.for_config(cfg(request)))
    except repo.RepoError as exc:
        pair, models_error = None, str(exc)
    if pair is not None:
        stored = pair[0]
        if stored.state != "active":
            models_error = f"Your playground key is {stored.state}: create a new one or paste a key."
        else:
            try:
                found = await relay.models(await _proxy(request), pair[1], ip(request))
            except relay.RelayError as exc:
                models_error = str(exc)
    users = [u.name for u in await repo.list_users(db(request))]
    context.setdefault("chosen", ())
    return page(
        request,
        template,
        status_code=status_code,
        stored=stored,
        users=users,
        models=[_model_entry(m) for m in found],
        embedders=_embedding_first([_model_entry(m) for m in found]),
        models_error=models_error,
        sets=SETS,
        search=cfg(request).search.enabled,
        **context,
    )


def _template(path: str) -> str:
    return "playground.html" if path == PAGES[0] else "playground_embeddings.html"


async def _proxy(request: Request) -> relay.Proxy:
    """The proxy to relay to, with the certificate in force (config.toml's, or one set in /settings)."""
    return relay.for_config(cfg(request), await repo.get_settings(db(request)))


async def _json(request: Request) -> dict:
    try:
        data = await request.json()
    except SerializationException:
        raise BadInput("the request body is not JSON") from None
    if not isinstance(data, dict):
        raise BadInput("expected a JSON object")
    return data


async def _key(request: Request, data: dict) -> str:
    """The pasted key when one came with the request, else the admin's stored playground key."""
    pasted = data.get("key") or ""
    if pasted:
        if not isinstance(pasted, str) or keyfmt.split(pasted.strip()) is None:
            raise BadInput("the pasted key does not look like a Fortress key (fk_<id>_<secret>)")
        return pasted.strip()
    pair = await repo.get_playground_key(db(request), me(request).name, secretbox.for_config(cfg(request)))
    if pair is None:
        raise BadInput("create a playground key first, or paste a key")
    return pair[1]


def _error(message: str) -> Response:
    return Response({"error": message}, status_code=400)


def _model_entry(m: dict) -> dict:
    details = m.get("details") if isinstance(m.get("details"), dict) else {}
    name, family = str(m["name"]), str(details.get("family") or "")
    text = f"{name} {family}".lower()
    return {
        "name": name,
        "family": family,
        "size": str(details.get("parameter_size") or ""),
        "embedding": any(hint in text for hint in _EMBEDDING_HINTS),  # a hint for ordering, not a filter
    }


def _embedding_first(models: list[dict]) -> list[dict]:
    return sorted(models, key=lambda m: not m["embedding"])
