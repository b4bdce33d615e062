"""Backends and their models: add/edit/remove/test backends; pull (with live progress), re-pull,
delete, copy and unload models. Backends from config.toml are shown read-only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.response import Response, Template

from admin import backend_client, inventory, queries
from admin.web import cfg, db, form, ip, is_htmx, me, page, see_other
from fortress.backends.kind import kind_named
from fortress.state import repo
from fortress.state.secretbox import for_config


class BackendsController(Controller):
    @get("/backends")
    async def backends(self, request: Request, saved: str = "") -> Template:
        return await _backends_page(request, saved=saved)

    @post("/backends")
    async def add_backend(self, request: Request) -> Template | Response:
        data = await form(request)
        try:
            await add_from_form(request, data)
        except repo.RepoError as exc:
            return await _backends_page(request, error=str(exc), draft=data, status_code=400)
        return see_other(request, "/backends")

    @post("/backends/{name:str}/edit")
    async def edit_backend(self, request: Request, name: str) -> Template | Response:
        """Save the edit form: every field is posted; a blank credential keeps the stored one."""
        data = await form(request)
        try:
            await repo.update_backend(
                db(request),
                name,
                actor=me(request).name,
                ip=ip(request),
                url=data.get("url", ""),
                type=data.get("type", "ollama"),
                weight=_int(data.get("weight"), 1, "weight"),
                models=data.get("models", ""),
                max_concurrent=_int(data.get("max_concurrent"), 0, "max concurrent"),
                credential="" if data.get("clear_credential") else data.get("credential") or None,
                box=for_config(cfg(request)),
                file_backends=cfg(request).backends,
            )
        except repo.RepoError as exc:
            return await _backends_page(request, error=str(exc), editing=name, edit=data, status_code=400)
        request.app.state.inventory.forget()
        return see_other(request, f"/backends?saved={name}")

    @post("/backends/{name:str}/remove")
    async def remove_backend(self, request: Request, name: str) -> Template | Response:
        try:
            await repo.remove_backend(db(request), name, actor=me(request).name, ip=ip(request))
        except repo.RepoError as exc:
            return await _backends_page(request, error=str(exc), status_code=400)
        request.app.state.inventory.forget()
        return see_other(request, "/backends")

    @post("/backends/{name:str}/test")
    async def test_backend(self, request: Request, name: str) -> Template:
        target = await _target(request, name)
        probes = await request.app.state.inventory.probe_all([target], fresh=True)
        await repo.audit(db(request), me(request).name, "backend.test", name, ip=ip(request))
        return page(request, "_probe.html", t=target, p=probes[name])

    @get("/models")
    async def models(self, request: Request) -> Template:
        return await _models_page(request)

    @post("/models/pull")
    async def pull(self, request: Request) -> Template:
        data = await form(request)
        target = await _target(request, data.get("backend", ""))
        model = data.get("model", "")
        if not model:
            return _pull_error(request, "Enter a model name to pull.")
        job = request.app.state.pulls.start(target, model)
        await repo.audit(
            db(request), me(request).name, "model.pull", f"{target.name}/{model}", ip=ip(request)
        )
        return page(request, "_pull.html", job=job)

    @get("/models/pulls/{job_id:str}")
    async def pull_progress(self, request: Request, job_id: str) -> Template:
        job = request.app.state.pulls.jobs.get(job_id)
        if job is None:
            raise NotFoundException("no such pull")
        if job.done:
            request.app.state.inventory.forget()
        # 286 tells htmx to stop polling once the pull has finished
        return page(request, "_pull.html", job=job, status_code=286 if job.done else 200)

    @post("/models/delete")
    async def delete(self, request: Request) -> Template | Response:
        return await _model_op(request, "model.delete", lambda t, d: backend_client.delete(t, d["model"]))

    @post("/models/copy")
    async def copy(self, request: Request) -> Template | Response:
        return await _model_op(
            request, "model.copy", lambda t, d: backend_client.copy(t, d["model"], d.get("destination", ""))
        )

    @post("/models/unload")
    async def unload(self, request: Request) -> Template | Response:
        return await _model_op(request, "model.unload", lambda t, d: backend_client.unload(t, d["model"]))


async def add_from_form(request: Request, data: dict[str, str]) -> None:
    """Store a backend from a posted form (this page and the first-run wizard); RepoError on bad input."""
    await repo.add_backend(
        db(request),
        data.get("name", ""),
        data.get("url", ""),
        actor=me(request).name,
        ip=ip(request),
        type=data.get("type", "ollama"),
        weight=_int(data.get("weight"), 1, "weight"),
        models=data.get("models", ""),
        credential=data.get("credential", ""),
        max_concurrent=_int(data.get("max_concurrent"), 0, "max concurrent"),
        box=for_config(cfg(request)),
        file_backends=cfg(request).backends,
    )
    request.app.state.inventory.forget()


def _int(text: str | None, default: int, what: str) -> int:
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise repo.RepoError(f"{what}: must be a whole number") from None


async def _target(request: Request, name: str) -> backend_client.Target:
    try:
        return await inventory.target(db(request), cfg(request), name)
    except LookupError as exc:
        raise NotFoundException(str(exc)) from None


def _pull_error(request: Request, message: str) -> Template:
    return page(request, "_pull.html", job=None, error=message)


ModelOp = Callable[[backend_client.Target, dict[str, str]], Awaitable[None]]


async def _model_op(request: Request, action: str, op: ModelOp) -> Template | Response:
    data = await form(request)
    target = await _target(request, data.get("backend", ""))
    if not data.get("model"):
        return await _models_page(request, error="No model given.", status_code=400)
    try:
        await op(target, data)
    except backend_client.BackendError as exc:
        return await _models_page(request, error=f"{target.name}: {exc}", status_code=502)
    detail = data.get("destination", "")
    await repo.audit(
        db(request), me(request).name, action, f"{target.name}/{data['model']}", detail, ip=ip(request)
    )
    request.app.state.inventory.forget()
    return see_other(request, "/models")


async def _backends_page(request: Request, saved: str = "", **extra: object) -> Template:
    rows = await repo.list_backends(db(request), cfg(request).backends)
    targets = await inventory.targets(db(request), cfg(request))
    probes = await request.app.state.inventory.probe_all(targets)
    extra.setdefault("draft", {})
    extra.setdefault("editing", "")
    extra.setdefault("edit", {})
    if saved in {b.name for b in rows if b.source == "db"}:
        extra["notice"] = f"Backend {saved} saved. The running proxy uses the change within a second."
    return page(request, "backends.html", backends=rows, probes=probes, **extra)  # type: ignore[arg-type]


async def _models_page(request: Request, **extra: object) -> Template:
    """Ollama backends' models (probed now) with the capabilities the proxy learnt of them, and the
    providers' configured models with their configured capabilities."""
    records = await inventory.records(db(request), cfg(request))
    targets = [t for t in map(backend_client.Target.from_record, records) if t.kind.manages_models]
    providers = [r for r in records if kind_named(r.type).static_models]
    probes = await request.app.state.inventory.probe_all(targets)
    pulls = [j for j in request.app.state.pulls.jobs.values() if not j.done]
    learnt = queries.capabilities(await queries.proxy_live(db(request)))
    if is_htmx(request):
        extra["status_code"] = 200
    return page(
        request,
        "models.html",
        targets=targets,
        probes=probes,
        pulls=pulls,
        learnt=learnt,
        providers=providers,
        **extra,  # type: ignore[arg-type]
    )
