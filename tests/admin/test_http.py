"""The admin over real HTTP: login gate, lockout, CSRF, cookie flags, headers, roles, CSV export, audit."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import stat
from collections import Counter
from datetime import UTC, datetime

import httpx

from fortress.state.db import connect
from fortress.state.usage import UsageEvent, write_batch
from tests.admin.conftest import ADMIN_PASSWORD, ADMIN_USER, Admin, csrf, start_admin
from tests.conftest import stop

PAGES = [
    "/",
    "/users",
    "/users/nobody",
    "/backends",
    "/models",
    "/settings",
    "/analytics",
    "/audit",
    "/help",
    "/dashboard/live",
    "/analytics/csv/daily",
]


def test_every_page_needs_a_session(admin: Admin) -> None:
    with admin.client() as c:
        for path in PAGES:
            r = c.get(path)
            assert (r.status_code, r.headers.get("location")) == (303, "/login"), path
        assert c.get("/dashboard/live", headers={"HX-Request": "true"}).headers["HX-Redirect"] == "/login"
        assert c.get("/login").status_code == 200
        assert c.get("/static/htmx.min.js").status_code == 200


def test_wrong_password_shows_an_error_and_sets_no_session(admin: Admin) -> None:
    with admin.client() as c:
        token = csrf(c.get("/login"))
        r = c.post("/login", data={"username": ADMIN_USER, "password": "nope-nope", "_csrf_token": token})
        assert r.status_code == 401
        assert "Wrong user name or password" in r.text
        assert c.get("/users").status_code == 303


def test_session_cookie_flags(admin: Admin) -> None:
    with admin.client() as c:
        token = csrf(c.get("/login"))
        r = c.post("/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "_csrf_token": token})
    cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("fortress_session="))
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert "httponly" in attrs
    assert attrs["samesite"].lower() in ("samesite=strict", "samesite=lax")
    assert attrs["max-age"] == "Max-Age=28800"  # admin.session_lifetime_s default
    assert "secure" not in attrs  # plain HTTP here; the TLS test checks Secure


def test_security_headers_on_pages_static_and_errors(admin: Admin) -> None:
    with admin.client() as c:
        for path in ("/login", "/static/admin.css", "/users"):
            h = c.get(path).headers
            csp = h["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert h["x-content-type-options"] == "nosniff"
            assert h["referrer-policy"] == "same-origin"
            assert h["x-frame-options"] == "DENY"


def test_post_without_csrf_token_is_refused(admin: Admin) -> None:
    c, token = admin.login()
    assert c.post("/users", data={"name": "mallory"}).status_code == 403
    assert c.post("/users", data={"name": "mallory", "_csrf_token": "x" * 80}).status_code == 403
    assert c.post("/users", json={"name": "mallory"}).status_code == 403
    assert "mallory" not in c.get("/users").text
    r = c.post("/users", data={"name": "carol"}, headers={"X-CSRFToken": token})
    assert (r.status_code, r.headers["location"]) == (303, "/users/carol")


def test_key_is_shown_once(admin: Admin) -> None:
    c, token = admin.login()
    c.post("/users", data={"name": "dave", "_csrf_token": token})
    r = c.post(
        "/users/dave/keys",
        data={"label": "ci", "rate": "5/1m", "expires": "30d", "_csrf_token": token},
        headers={"HX-Request": "true"},
    )
    keys = re.findall(r"fk_[a-z0-9]{8}_[A-Za-z0-9]{32,}", r.text)
    assert len(set(keys)) == 1
    page = c.get("/users/dave").text
    assert keys[0] not in page and keys[0][:11] in page and "5/1m" in page
    bad = c.post("/users/dave/keys", data={"rate": "lots", "_csrf_token": token})
    assert bad.status_code == 400 and "invalid limit" in bad.text


def test_viewer_reads_but_cannot_change(admin: Admin) -> None:
    c, token = admin.login()
    r = c.post(
        "/settings/admins",
        data={
            "username": "watcher",
            "new_password": "watching-you",
            "role": "viewer",
            "_csrf_token": token,
        },
    )
    assert r.status_code == 303
    v, vtoken = admin.login("watcher", "watching-you")
    assert v.get("/users").status_code == 200
    assert "Add user" not in v.get("/users").text
    assert v.post("/users", data={"name": "sneaky", "_csrf_token": vtoken}).status_code == 403
    assert "sneaky" not in admin.login()[0].get("/users").text


def test_audit_records_who_what_and_where(admin: Admin) -> None:
    c, token = admin.login()
    c.post("/users", data={"name": "erin", "_csrf_token": token})
    text = c.get("/audit", params={"q": "erin"}).text
    row = re.search(
        r"<tr><td>([^<]+)</td><td>admin</td><td>127\.0\.0\.1</td><td><code>user\.add</code></td><td>erin</td>",
        text,
    )
    assert row, text
    assert "admin.login" in c.get("/audit").text if not c.is_closed else True


def test_twenty_wrong_logins_lock_out_the_ip(fresh_admin: Admin) -> None:
    with fresh_admin.client() as c:
        token = csrf(c.get("/login"))
        for i in range(20):
            r = c.post(
                "/login", data={"username": f"guess{i % 4}", "password": "x" * 9, "_csrf_token": token}
            )
            assert r.status_code == 401, i
        r = c.post("/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "_csrf_token": token})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) > 0 and "Too many failed sign-ins" in r.text


def test_wrong_logins_lock_out_the_account(fresh_admin: Admin) -> None:
    with fresh_admin.client() as c:
        token = csrf(c.get("/login"))
        for _ in range(10):
            r = c.post("/login", data={"username": ADMIN_USER, "password": "x" * 9, "_csrf_token": token})
            assert r.status_code == 401
        r = c.post("/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "_csrf_token": token})
        assert r.status_code == 429


def test_session_secret_is_a_private_file_that_survives_restarts(fresh_admin: Admin) -> None:
    secret = fresh_admin.home.db.parent / "admin-session.secret"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    c, _ = fresh_admin.login()
    before = secret.read_bytes()
    stop(fresh_admin.proc)
    again = start_admin(fresh_admin.home)
    try:
        with httpx.Client(base_url=again.url, cookies=c.cookies, follow_redirects=False) as c2:
            assert c2.get("/users").status_code == 200
    finally:
        stop(again.proc)
    assert secret.read_bytes() == before


def _events() -> list[UsageEvent]:
    """Three days of traffic with a known shape (deterministic)."""
    base = datetime(2025, 3, 10, tzinfo=UTC).timestamp()
    out = []
    for i in range(3000):
        out.append(
            UsageEvent(
                ts=base + i * 86.4,  # spread over 3 days
                request_id=f"r{i}",
                key_id=f"key{i % 3:05d}",
                user_name=("ann", "bob", "cid")[i % 3],
                method="POST",
                path="/api/chat",
                model=("llama3.2", "qwen3", "gemma3", "phi4")[i % 4 if i % 10 else 0],
                backend=("b1", "b2")[i % 2],
                status=(200, 200, 200, 429, 502)[i % 5],
                ttfb_ms=float(i % 50),
                duration_ms=float(100 + i % 400),
                prompt_eval_count=10,
                eval_count=i % 7,
            )
        )
    return out


def _seed(admin: Admin, events: list[UsageEvent]) -> None:
    async def go() -> None:
        db = await connect(admin.home.db)
        try:
            await write_batch(db, events)
        finally:
            await db.close()

    asyncio.run(go())


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def _csv(c: httpx.Client, name: str, **params: str) -> list[list[str]]:
    r = c.get(f"/analytics/csv/{name}", params={"start": "2025-03-10", "end": "2025-03-12", **params})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(r.text)))


def test_analytics_csv_matches_the_rows(admin: Admin) -> None:
    events = _events()
    _seed(admin, events)
    c, _ = admin.login()
    daily = _csv(c, "daily")
    assert daily[0] == ["day", "requests", "errors", "prompt_tokens", "completion_tokens"]
    by_day = Counter(datetime.fromtimestamp(e.ts, UTC).date().isoformat() for e in events)
    assert {r[0]: int(r[1]) for r in daily[1:]} == dict(by_day)
    errors = Counter(datetime.fromtimestamp(e.ts, UTC).date().isoformat() for e in events if e.status >= 400)
    assert {r[0]: int(r[2]) for r in daily[1:]} == dict(errors)
    assert sum(int(r[4]) for r in daily[1:]) == sum(e.eval_count or 0 for e in events)

    models = _csv(c, "models")
    assert {r[0]: int(r[1]) for r in models[1:]} == dict(Counter(e.model for e in events))
    status = _csv(c, "status")
    assert {int(r[0]): int(r[1]) for r in status[1:]} == dict(Counter(e.status for e in events))
    hourly = _csv(c, "hourly")
    assert sum(int(r[1]) for r in hourly[1:]) == len(events) and len(hourly) == 1 + 72
    ann = _csv(c, "models", user="ann")
    assert sum(int(r[1]) for r in ann[1:]) == sum(1 for e in events if e.user_name == "ann")
    one_day = _csv(c, "status", start="2025-03-11", end="2025-03-11")
    assert sum(int(r[1]) for r in one_day[1:]) == by_day["2025-03-11"]

    page = c.get("/analytics", params={"start": "2025-03-10", "end": "2025-03-12"})
    assert page.status_code == 200
    assert page.text.count("<svg") == 6 and "3,000 requests" in page.text
    assert "From all 3,000 requests" in page.text  # under the sampling threshold: exact percentiles
