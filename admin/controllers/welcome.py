"""First-run wizard: on a fresh install (no backend in config.toml or the database) the dashboard
sends the first admin here to add a backend (tested live), create a first user and key (shown once)
and copy a curl line that tries it. Finishing or skipping is recorded in meta.first_run, so the
wizard never comes back, even if every backend is later removed."""

from __future__ import annotations

import json

import aiosqlite
from litestar import Controller, Request, get, post
from litestar.response import Redirect, Response, Template

from admin import backend_client, inventory
from admin.controllers.backends import add_from_form
from admin.controllers.help import proxy_url
from admin.web import cfg, db, form, ip, me, page, see_other
from fortress.backends.kind import kind_named
from fortress.pipeline import routes
from fortress.state import repo
from fortress.state.snapshot import BackendRecord

STATE_KEY = "first_run"  # meta row: 'backend' once step 1 is done, then 'done' or 'skipped'
FINISHED = ("done", "skipped")


async def _state(conn: aiosqlite.Connection) -> str:
    async with conn.execute("SELECT value FROM meta WHERE key = ?", (STATE_KEY,)) as cur:
        row = await cur.fetchone()
    return row[0] if row else ""


async def _set_state(conn: aiosqlite.Connection, value: str) -> None:
    await conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (STATE_KEY, value),
    )


async def pending(request: Request) -> bool:
    """Should this admin be walked through the set-up? Admins only; never after it ended once."""
    if me(request).role != "admin":
        return False
    state = await _state(db(request))
    if state in FINISHED:
        return False
    return state == "backend" or not await repo.list_backends(db(request), cfg(request).backends)


def _target(data: dict[str, str]) -> backend_client.Target:
    """The backend as typed in the form; ValueError for a URL no backend can have."""
    record = BackendRecord(
        data.get("name", ""),
        data.get("url", ""),
        data.get("type", "ollama"),
        credential=data.get("credential", ""),
    )
    return backend_client.Target.from_record(record)


def curl_line(proxy: str, key: str, backend_type: str, model: str) -> str:
    """One shell line that sends a chat through the proxy with the new key (pure)."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "stream": False}
    native = kind_named(backend_type).serves(routes.classify("/api/chat"))
    path = "/api/chat" if native else "/v1/chat/completions"
    return (
        f'curl {proxy}{path} -H "Authorization: Bearer {key}" -H "Content-Type: application/json" '
        f"-d '{json.dumps(body)}'"
    )


class WelcomeController(Controller):
    @get("/welcome")
    async def welcome(self, request: Request) -> Template | Redirect:
        if not await pending(request):
            return Redirect(path="/", status_code=303)
        if await _state(db(request)) == "backend":
            return await _user_step(request)
        return page(request, "welcome.html", step=1, draft={"name": "local", "url": "http://127.0.0.1:11434"})

    @post("/welcome/test")
    async def test(self, request: Request) -> Template:
        """Call the backend as typed, before anything is saved: health, version, models."""
        data = await form(request)
        try:
            repo.check_backend_url(data.get("url", ""))
            repo.check_backend_type(data.get("type", "ollama"))
            target = _target(data)
        except (repo.RepoError, ValueError) as exc:
            return page(request, "welcome.html", step=1, draft=data, error=str(exc), status_code=400)
        probe = await backend_client.probe(target)
        return page(request, "welcome.html", step=1, draft=data, p=probe)

    @post("/welcome/backend")
    async def add_backend(self, request: Request) -> Template | Response:
        data = await form(request)
        try:
            await add_from_form(request, data)
        except repo.RepoError as exc:
            return page(request, "welcome.html", step=1, draft=data, error=str(exc), status_code=400)
        await _set_state(db(request), "backend")
        return see_other(request, "/welcome")

    @post("/welcome/user")
    async def add_user(self, request: Request) -> Template:
        data = await form(request)
        name, label = data.get("name", ""), data.get("label", "")
        actor, conn = me(request).name, db(request)
        try:
            if name not in {u.name for u in await repo.list_users(conn)}:
                await repo.add_user(conn, name, actor=actor, ip=ip(request))
            key, _ = await repo.create_key(conn, name, actor=actor, ip=ip(request), label=label)
        except repo.RepoError as exc:
            return await _user_step(request, error=str(exc), draft=data, status_code=400)
        await _set_state(conn, "done")
        await repo.audit(conn, actor, "wizard.done", name, ip=ip(request))
        target, model = await _first_model(request)
        return page(
            request,
            "welcome.html",
            step=3,
            new_key=key,
            user=name,
            backend=target,
            model=model,
            curl=curl_line(
                proxy_url(request, await repo.get_settings(conn)),
                key,
                target.kind.name if target else "ollama",
                model or "MODEL",
            ),
        )

    @post("/welcome/skip")
    async def skip(self, request: Request) -> Response:
        await _set_state(db(request), "skipped")
        await repo.audit(db(request), me(request).name, "wizard.skip", ip=ip(request))
        return see_other(request, "/")


async def _first_model(request: Request) -> tuple[backend_client.Target | None, str]:
    """The backend added in step 1 (on a fresh install the only one) and a model it serves, if any."""
    rows = await repo.list_backends(db(request))
    if not rows:
        return None, ""
    target = await inventory.target(db(request), cfg(request), rows[0].name)
    if target.kind.static_models:  # a provider's configured models, offered as "<backend>/<model>"
        configured = [m for m in rows[0].models.split(",") if m]
        return target, f"{target.name}/{configured[0]}" if configured else ""
    probe = (await request.app.state.inventory.probe_all([target]))[target.name]
    return target, probe.installed[0]["name"] if probe.ok and probe.installed else ""


async def _user_step(request: Request, **extra: object) -> Template:
    target, model = await _first_model(request)
    extra.setdefault("draft", {"label": "first key"})
    return page(request, "welcome.html", step=2, backend=target, model=model, **extra)  # type: ignore[arg-type]
