"""The admin application: Litestar app assembly, session and CSRF set-up, the login gate, run().

The admin shares only the SQLite database with the proxy. Every change it makes bumps the
database's config_version (schema triggers), which the proxy polls, so edits apply within a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import psutil
from litestar import Litestar, Request
from litestar.config.csrf import CSRFConfig
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Response
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from admin import secret, server, sessions
from admin.controllers import ALL as CONTROLLERS
from admin.headers import security_headers
from admin.inventory import Inventory
from admin.lockout import LoginThrottle
from admin.pulls import Pulls
from admin.requestcheck import request_check
from admin.web import is_htmx
from fortress import logs
from fortress.addr import parse_listen
from fortress.backends.kind import kind_names
from fortress.config import Config
from fortress.proxy.tls import LiveTls
from fortress.state.db import connect, migrate
from fortress.state.repo import get_settings

HERE = Path(__file__).resolve().parent
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# a viewer may still do these: they touch only the signed-in account
OWN_ACCOUNT_POSTS = frozenset(
    {"/logout", "/settings/theme", "/account/password", "/account/sessions/end-others"}
)
log = logging.getLogger("fortress.admin")


async def require_login(request: Request) -> Response | None:
    """Gate every route but /login and /static: a live session, an existing account, the right role."""
    path = request.url.path
    if path == "/login" or path.startswith("/static/"):
        return None
    token = request.cookies.get(sessions.COOKIE, "")
    account = await sessions.account_for(request.app.state.db, token) if token else None
    if account is None:
        response: Response = (
            Response(content="", status_code=401, headers={"HX-Redirect": "/login"})
            if is_htmx(request)
            else Redirect(path="/login", status_code=303)
        )
        if token:
            response.delete_cookie(sessions.COOKIE)
        return response
    request.state.admin = account
    if request.method not in SAFE_METHODS and account.role != "admin" and path not in OWN_ACCOUNT_POSTS:
        return Response(
            content="Your account is read-only (viewer).", status_code=403, media_type="text/plain"
        )
    return None


def _ts(value: float | None) -> str:
    if not value:
        return "never"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _clock(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%H:%M:%S UTC")


def _num(value: float | None) -> str:
    return f"{value or 0:,.0f}"


def _size(value: float | None) -> str:
    size = float(value or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""  # pragma: no cover


def _engine(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters.update(ts=_ts, clock=_clock, num=_num, size=_size)
    # the backend types the forms offer: every registered kind, so a new kind needs no template edit
    engine.engine.globals["backend_kinds"] = kind_names()


def create_app(
    cfg: Config, *, throttle: LoginThrottle | None = None, live_tls: LiveTls | None = None
) -> Litestar:
    """The admin app for `cfg`; the database must exist (`fortress init`), it is migrated if older.

    `live_tls` is the admin's own HTTPS listener context, when it serves HTTPS (see run()).
    """
    key = secret.load_or_create(secret.secret_path(cfg))
    tls = live_tls is not None

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await migrate(cfg.database.path)
        app.state.db = await connect(cfg.database.path)
        app.state.pulls = Pulls()
        app.state.inventory = Inventory()
        psutil.cpu_percent(interval=None)  # primes the counter: the first call always says 0
        try:
            yield
        finally:
            await app.state.pulls.close()
            await app.state.db.close()

    csrf = CSRFConfig(
        secret=hmac.new(key, b"csrf", hashlib.sha256).hexdigest(),
        cookie_name="fortress_csrf",
        cookie_httponly=True,
        cookie_secure=tls,
        cookie_samesite="strict",
        header_name="x-csrftoken",
    )
    app = Litestar(
        route_handlers=[
            *CONTROLLERS,
            create_static_files_router(path="/static", directories=[HERE / "static"]),
        ],
        lifespan=[lifespan],
        middleware=[security_headers, request_check],
        csrf_config=csrf,
        before_request=require_login,
        template_config=TemplateConfig(
            directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=_engine
        ),
        openapi_config=None,
        debug=False,
    )
    app.state.cfg = cfg
    app.state.throttle = throttle or LoginThrottle()
    app.state.tls = tls
    app.state.live_tls = live_tls
    return app


async def _settings(cfg: Config) -> dict[str, str]:
    db = await connect(cfg.database.path)
    try:
        return await get_settings(db)
    finally:
        await db.close()


def run(cfg: Config) -> int:
    """Serve the admin on admin.listen until interrupted; returns the exit code.

    The admin serves HTTPS with the proxy's certificate (the pair in force when it starts) and
    follows certificate changes made on its settings page without a restart.
    """
    logs.configure(cfg.logging)
    host, port = parse_listen(cfg.admin.listen, "admin.listen")
    live_tls = LiveTls.start(cfg, asyncio.run(_settings(cfg)))
    server.serve(
        create_app(cfg, live_tls=live_tls), host, port, cfg.admin, live_tls.context if live_tls else None
    )
    return 0
