"""Issue 12.6: admin sessions live on the server and end at sign-out, password change and account removal."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.admin.conftest import ADMIN_PASSWORD, ADMIN_USER, Admin, csrf, sign_in

COOKIE = "fortress_session"


def copy_of(c: httpx.Client, admin: Admin) -> httpx.Client:
    """Another client holding the same session cookie, as a thief with a copied cookie would."""
    return httpx.Client(
        base_url=admin.url, cookies={COOKIE: c.cookies[COOKIE]}, timeout=10, follow_redirects=False
    )


def signed_in(c: httpx.Client) -> bool:
    r = c.get("/users")
    assert r.status_code in (200, 303), r.status_code
    return r.status_code == 200


def test_the_cookie_holds_only_a_random_token_stored_hashed(admin: Admin) -> None:
    c, _ = admin.login()
    token = c.cookies[COOKIE]
    assert len(token) >= 40 and ADMIN_USER not in token
    with sqlite3.connect(admin.home.db) as db:
        hashes = [r[0] for r in db.execute("SELECT token_hash FROM admin_sessions")]
    assert token not in hashes and len(hashes) >= 1


def test_logout_kills_a_copied_cookie(admin: Admin) -> None:
    c, token = admin.login()
    thief = copy_of(c, admin)
    assert signed_in(thief)
    r = c.post("/logout", data={"_csrf_token": token})
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    r = thief.get("/users")
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    dropped = [v for v in r.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}=")]
    assert dropped and "Max-Age=0" in dropped[0]  # the browser is told to forget the dead cookie
    htmx = thief.get("/dashboard/live", headers={"HX-Request": "true"})
    assert (htmx.status_code, htmx.headers["HX-Redirect"]) == (401, "/login")


def test_signing_in_again_replaces_the_session(admin: Admin) -> None:
    c, _ = admin.login()
    old = copy_of(c, admin)
    token = csrf(c.get("/login"))
    r = c.post("/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "_csrf_token": token})
    assert r.status_code == 303
    assert signed_in(c) and not signed_in(old)


def test_password_change_ends_every_other_session(admin: Admin) -> None:
    c, token = admin.login()
    other, _ = admin.login()
    stolen = copy_of(c, admin)
    wrong = c.post(
        "/account/password",
        data={
            "password": "not it at all",
            "new_password": "x" * 12,
            "new_password_again": "x" * 12,
            "_csrf_token": token,
        },
    )
    assert wrong.status_code == 400 and "current password is wrong" in wrong.text
    differ = c.post(
        "/account/password",
        data={
            "password": ADMIN_PASSWORD,
            "new_password": "a" * 12,
            "new_password_again": "b" * 12,
            "_csrf_token": token,
        },
    )
    assert differ.status_code == 400 and "differ" in differ.text
    assert signed_in(other) and signed_in(stolen)  # failed attempts end nothing

    new = "a brand new passphrase"
    r = c.post(
        "/account/password",
        data={
            "password": ADMIN_PASSWORD,
            "new_password": new,
            "new_password_again": new,
            "_csrf_token": token,
        },
    )
    try:
        assert (r.status_code, r.headers["location"]) == (303, "/account?changed=1")
        assert signed_in(c)  # this browser got a fresh session
        assert "Password changed" in c.get("/account?changed=1").text
        assert not signed_in(other) and not signed_in(stolen)
        admin.login(ADMIN_USER, new)
    finally:
        admin.home.cli("init", "--admin-user", ADMIN_USER, "--admin-password-stdin", stdin=ADMIN_PASSWORD)


def test_password_set_from_the_cli_ends_sessions_too(admin: Admin) -> None:
    c, _ = admin.login()
    assert signed_in(c)
    admin.home.cli("init", "--admin-user", ADMIN_USER, "--admin-password-stdin", stdin=ADMIN_PASSWORD)
    assert not signed_in(c)


def test_removing_an_account_ends_its_sessions(admin: Admin) -> None:
    c, token = admin.login()
    c.post(
        "/settings/admins",
        data={
            "username": "temp-admin",
            "new_password": "temporary-pass",
            "role": "admin",
            "_csrf_token": token,
        },
    )
    t, _ = admin.login("temp-admin", "temporary-pass")
    assert signed_in(t)
    r = c.post("/settings/admins/temp-admin/remove", data={"_csrf_token": token})
    assert r.status_code == 303
    assert not signed_in(t)


def test_an_expired_session_is_refused(admin: Admin) -> None:
    c, _ = admin.login()
    assert signed_in(c)
    with sqlite3.connect(admin.home.db) as db:
        db.execute("UPDATE admin_sessions SET expires_at = 0")
    assert not signed_in(c)


def test_a_viewer_can_sign_out_and_change_their_password(admin: Admin) -> None:
    c, token = admin.login()
    c.post(
        "/settings/admins",
        data={"username": "reader", "new_password": "reading-only", "role": "viewer", "_csrf_token": token},
    )
    v, vtoken = admin.login("reader", "reading-only")
    assert v.post("/users", data={"name": "nope", "_csrf_token": vtoken}).status_code == 403
    new = "reading-still"
    r = v.post(
        "/account/password",
        data={
            "password": "reading-only",
            "new_password": new,
            "new_password_again": new,
            "_csrf_token": vtoken,
        },
    )
    assert r.status_code == 303
    assert v.post("/logout", data={"_csrf_token": vtoken}).status_code == 303
    assert not signed_in(v)
    admin.login("reader", new)


def test_sign_out_other_sessions(admin: Admin) -> None:
    c, token = admin.login()
    others = [admin.login()[0] for _ in range(2)]
    page = c.get("/account").text
    assert "(this browser)" in page and "Sign out all other sessions" in page
    r = c.post("/account/sessions/end-others", data={"_csrf_token": token})
    assert r.status_code == 200 and "Signed out" in r.text
    assert signed_in(c)
    assert not any(signed_in(o) for o in others)


@pytest.mark.browser
def test_in_chromium_a_cookie_copied_before_sign_out_is_dead_after(browser: Browser, admin: Admin) -> None:
    context = browser.new_context(base_url=admin.url)
    page = context.new_page()
    sign_in(page)
    copied = [c for c in context.cookies() if c["name"] == COOKIE]
    assert copied and copied[0]["httpOnly"]
    thief = browser.new_context(base_url=admin.url)
    thief.add_cookies(copied)
    other = thief.new_page()
    other.goto("/users")
    expect(other.get_by_role("heading", name="Users")).to_be_visible()  # the copy works while signed in

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url("/login")
    other.goto("/users")
    expect(other).to_have_url("/login")  # dead on the server, not just deleted in one browser
    thief.close()
    context.close()
