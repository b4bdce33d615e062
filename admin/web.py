"""Small helpers every controller shares: the database, who is acting, from where, and rendering."""

from __future__ import annotations

from typing import Any

import aiosqlite
from litestar import Request
from litestar.response import Redirect, Response, Template

from admin.queries import AdminAccount
from fortress.config import Config


def db(request: Request) -> aiosqlite.Connection:
    return request.app.state.db


def cfg(request: Request) -> Config:
    return request.app.state.cfg


def me(request: Request) -> AdminAccount:
    return request.state.admin


def ip(request: Request) -> str:
    return request.client.host if request.client else ""


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def page(request: Request, template: str, /, status_code: int = 200, **context: Any) -> Template:
    """Render a template with the signed-in admin and the current path in its context."""
    context.setdefault("me", getattr(request.state, "admin", None))
    context.setdefault("path", request.url.path)
    return Template(template_name=template, context=context, status_code=status_code)


def see_other(request: Request, url: str) -> Response:
    """After a successful form post: full-page redirect, for htmx too (HX-Redirect)."""
    if is_htmx(request):
        return Response(content="", status_code=200, headers={"HX-Redirect": url})
    return Redirect(path=url, status_code=303)


async def form(request: Request) -> dict[str, str]:
    """The posted form as single strings, trimmed (file parts are left out)."""
    data = await request.form()
    return {k: v.strip() for k, v in data.items() if isinstance(v, str)}
