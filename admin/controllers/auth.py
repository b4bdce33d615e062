"""Sign-in and sign-out: scrypt check, per-account and per-IP lockout, a fresh session on success."""

from __future__ import annotations

import asyncio
import math
import time

from litestar import Controller, Request, get, post
from litestar.response import Response, Template

from admin import queries
from admin.web import db, form, ip, page, see_other
from fortress.passwords import hash_password, verify_password

# Checked when the account does not exist, so a wrong name costs the same scrypt work as a wrong password.
_DUMMY_HASH = hash_password("fortress-no-such-admin")


class AuthController(Controller):
    @get("/login")
    async def login_form(self, request: Request) -> Template:
        return page(request, "login.html", username="", error="")

    @post("/login")
    async def login(self, request: Request) -> Template | Response:
        data = await form(request)
        username, password = data.get("username", "")[:64], data.get("password", "")
        throttle = request.app.state.throttle
        client = ip(request)
        wait = throttle.retry_after(username, client, time.time())
        if wait > 0:
            minutes = math.ceil(wait / 60)
            return _refused(
                request, username, 429, f"Too many failed sign-ins. Try again in {minutes} min.", wait
            )
        account = await queries.get_admin(db(request), username)
        stored = account.password_hash if account else _DUMMY_HASH
        ok = await asyncio.to_thread(verify_password, password, stored)
        if not ok or account is None:
            throttle.fail(username, client, time.time())
            return _refused(request, username, 401, "Wrong user name or password.")
        throttle.succeed(username)
        request.clear_session()
        request.set_session({"admin": account.name, "login_at": time.time()})
        await queries.record_login(db(request), account.name, client)
        return see_other(request, "/")

    @post("/logout")
    async def logout(self, request: Request) -> Response:
        request.clear_session()
        return see_other(request, "/login")


def _refused(request: Request, username: str, status: int, error: str, wait: float = 0) -> Template:
    response = page(request, "login.html", status_code=status, username=username, error=error)
    if wait:
        response.headers["Retry-After"] = str(math.ceil(wait))
    return response
