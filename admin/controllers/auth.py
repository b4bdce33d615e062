"""Sign-in, sign-out and your own account: scrypt check, lockout, server-side sessions, password change.

Sessions live in the database (admin/sessions.py): signing out deletes the row, so the cookie is
dead everywhere it was copied to. A new password ends every session of the account; the browser
that changed it gets a fresh one.
"""

from __future__ import annotations

import asyncio
import math
import time

from litestar import Controller, Request, get, post
from litestar.response import Response, Template

from admin import queries, sessions
from admin.web import cfg, db, form, ip, me, page, see_other
from fortress.passwords import hash_password, verify_password
from fortress.state import repo

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
        old = request.cookies.get(sessions.COOKIE)
        if old:  # signing in again in the same browser replaces its session
            await sessions.end(db(request), old)
        response = see_other(request, "/")
        await _new_session(request, response, account.name)
        await queries.record_login(db(request), account.name, client)
        return response

    @post("/logout")
    async def logout(self, request: Request) -> Response:
        await sessions.end(db(request), request.cookies.get(sessions.COOKIE, ""))
        await repo.audit(db(request), me(request).name, "admin.logout", me(request).name, ip=ip(request))
        response = see_other(request, "/login")
        response.delete_cookie(sessions.COOKIE)
        return response

    @get("/account")
    async def account(self, request: Request) -> Template:
        return await _account_page(request)

    @post("/account/password")
    async def change_password(self, request: Request) -> Template | Response:
        data = await form(request)
        name, client = me(request).name, ip(request)
        throttle = request.app.state.throttle
        if throttle.retry_after(name, client, time.time()) > 0:
            return await _account_page(request, status_code=429, error="Too many wrong passwords; wait.")
        ok = await asyncio.to_thread(verify_password, data.get("password", ""), me(request).password_hash)
        if not ok:
            throttle.fail(name, client, time.time())
            return await _account_page(request, status_code=400, error="Your current password is wrong.")
        new = data.get("new_password", "")
        if new != data.get("new_password_again", ""):
            return await _account_page(request, status_code=400, error="The new passwords differ.")
        try:  # the database trigger ends every session of the account, this one included
            await repo.set_admin_password(db(request), name, new, actor=name, ip=client)
        except repo.RepoError as exc:
            return await _account_page(request, status_code=400, error=str(exc))
        response = see_other(request, "/account?changed=1")
        await _new_session(request, response, name)
        return response

    @post("/account/sessions/end-others")
    async def end_others(self, request: Request) -> Template:
        ended = await sessions.end_others(
            db(request), me(request).name, request.cookies.get(sessions.COOKIE, "")
        )
        await repo.audit(
            db(request), me(request).name, "admin.sessions.end", me(request).name, ip=ip(request)
        )
        return await _account_page(request, notice=f"Signed out {ended} other session(s).")


async def _new_session(request: Request, response: Response, name: str) -> None:
    """Start a server-side session for `name` and hand its token to the browser in `response`."""
    lifetime = cfg(request).admin.session_lifetime_s
    token = await sessions.start(
        db(request),
        name,
        lifetime_s=lifetime,
        ip=ip(request),
        user_agent=request.headers.get("user-agent", ""),
    )
    response.set_cookie(
        sessions.COOKIE,
        token,
        max_age=lifetime,
        path="/",
        httponly=True,
        secure=request.app.state.tls,
        samesite="strict",
    )


async def _account_page(request: Request, status_code: int = 200, **extra: object) -> Template:
    if request.query_params.get("changed") and "error" not in extra:
        extra["notice"] = "Password changed. Every other session of your account has been signed out."
    rows = await sessions.list_for(db(request), me(request).name, request.cookies.get(sessions.COOKIE, ""))
    lifetime = cfg(request).admin.session_lifetime_s
    span = f"{lifetime / 3600:g} h" if lifetime >= 3600 else f"{lifetime / 60:g} min"
    return page(request, "account.html", status_code=status_code, sessions=rows, lifetime=span, **extra)


def _refused(request: Request, username: str, status: int, error: str, wait: float = 0) -> Template:
    response = page(request, "login.html", status_code=status, username=username, error=error)
    if wait:
        response.headers["Retry-After"] = str(math.ceil(wait))
    return response
