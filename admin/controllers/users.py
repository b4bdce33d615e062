"""Users and their API keys: list, add, remove; create a key (shown once), disable, enable, revoke."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.response import Response, Template

from admin.web import db, form, ip, is_htmx, me, page, see_other
from fortress.state import repo

SORTS = ("name", "keys", "requests", "tokens", "last_activity")
KEY_ACTIONS = {"disable": "disabled", "enable": "active", "revoke": "revoked"}


class UsersController(Controller):
    @get("/users")
    async def users(self, request: Request, sort: str = "name") -> Template:
        return await _users_page(request, sort)

    @post("/users")
    async def add_user(self, request: Request) -> Template | Response:
        name = (await form(request)).get("name", "")
        try:
            await repo.add_user(db(request), name, actor=me(request).name, ip=ip(request))
        except repo.RepoError as exc:
            return await _users_page(request, "name", error=str(exc), status_code=400)
        return see_other(request, f"/users/{name}")

    @post("/users/{name:str}/remove")
    async def remove_user(self, request: Request, name: str) -> Template | Response:
        try:
            await repo.remove_user(db(request), name, actor=me(request).name, ip=ip(request))
        except repo.RepoError as exc:
            return await _users_page(request, "name", error=str(exc), status_code=400)
        return see_other(request, "/users")

    @get("/users/{name:str}")
    async def user(self, request: Request, name: str) -> Template:
        return await _user_page(request, name)

    @post("/users/{name:str}/keys")
    async def create_key(self, request: Request, name: str) -> Template:
        data = await form(request)
        try:
            full, row = await repo.create_key(
                db(request),
                name,
                actor=me(request).name,
                ip=ip(request),
                label=data.get("label", ""),
                rate=data.get("rate", ""),
                tokens=data.get("tokens", ""),
                max_concurrent=_whole(data, "max_concurrent", "max concurrent"),
                models=data.get("models", ""),
                expires=data.get("expires", ""),
                scope=data.get("scope", "user"),
                max_num_ctx=_whole(data, "max_num_ctx", "max context length"),
                max_num_predict=_whole(data, "max_num_predict", "max tokens generated"),
                max_keep_alive=data.get("max_keep_alive", ""),
                auto_models=data.get("auto_models", ""),
            )
        except repo.RepoError as exc:
            return await _user_page(request, name, error=str(exc), status_code=400, draft=data)
        return await _user_page(request, name, new_key=full, new_key_id=row.id)

    @post("/keys/{key_id:str}/{action:str}")
    async def key_action(self, request: Request, key_id: str, action: str) -> Response:
        if action not in KEY_ACTIONS:
            raise NotFoundException()
        try:
            row = await repo.get_key(db(request), key_id)
            await repo.set_key_state(
                db(request), key_id, KEY_ACTIONS[action], actor=me(request).name, ip=ip(request)
            )
        except repo.RepoError as exc:
            raise NotFoundException(str(exc)) from None
        return see_other(request, f"/users/{row.user}")


def _whole(data: dict[str, str], field: str, what: str) -> int | None:
    """An optional whole-number form field ('' = not set); anything else is the user's mistake."""
    text = data.get(field, "")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise repo.RepoError(f"{what}: must be a whole number") from None


async def _users_page(request: Request, sort: str, **extra: object) -> Template:
    column = sort.lstrip("-")
    if column not in SORTS:
        sort = column = "name"
    rows = await repo.list_users(db(request), order=sort)
    return page(request, "users.html", users=rows, sort=sort, column=column, **extra)  # type: ignore[arg-type]


async def _user_page(request: Request, name: str, **extra: object) -> Template:
    try:
        keys = await repo.list_keys(db(request), name)
    except repo.RepoError:
        raise NotFoundException(f"no user named {name!r}") from None
    extra.setdefault("draft", {})
    template = "user.html"
    if is_htmx(request) and request.method == "POST":  # htmx swaps only 2xx: errors travel in the fragment
        template, extra["status_code"] = "_key_created.html", 200
    return page(request, template, name=name, keys=keys, **extra)  # type: ignore[arg-type]
