"""The playground relay over real HTTP: admin (session + CSRF) -> proxy (key) -> simulator."""

from __future__ import annotations

import json
import sqlite3
import ssl
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from fortress.state.secretbox import SecretBox
from tests.admin.conftest import ADMIN_PASSWORD, ADMIN_USER, Admin, csrf, start_admin
from tests.conftest import (
    PY,
    Fortress,
    Sim,
    _merge,
    free_port,
    make_fortress,
    start,
    start_sim,
    stop,
    wait_port,
)

CHAT = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]}


@contextmanager
def playground_stack(
    tmp: Path, user: str, *sim_flags: str, extra: str = ""
) -> Iterator[tuple[Fortress, Admin, Sim]]:
    """Simulator, proxy and admin over one database that has `user`, for the playground tests
    (`extra`: more configuration)."""
    sim = start_sim(*sim_flags, name="playground")
    home = make_fortress(tmp, [("local", sim.url)], extra)
    home.cli("user", "add", user)
    home.serve()
    admin = start_admin(home)
    try:
        yield home, admin, sim
    finally:
        stop(admin.proc)
        home.stop()
        sim.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fortress, Admin, Sim]]:
    with playground_stack(
        tmp_path_factory.mktemp("pg-http"), "pg-user", "--models", "llama3.2:1b,nomic-embed-text"
    ) as s:
        yield s


def _rows(home: Fortress, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(home.db) as db:
        return db.execute(sql, args).fetchall()


def _make_key(c: httpx.Client, token: str, user: str = "pg-user") -> None:
    r = c.post(
        "/playground/key", data={"user": user, "label": "", "next": "/playground", "_csrf_token": token}
    )
    assert (r.status_code, r.headers.get("location")) == (303, "/playground"), r.text


def _chat(c: httpx.Client, token: str, body: dict) -> tuple[int, list[dict]]:
    r = c.post("/playground/chat", json=body, headers={"x-csrftoken": token}, timeout=30)
    if r.headers.get("content-type", "").startswith("application/json"):
        return r.status_code, [r.json()]
    return r.status_code, [json.loads(line) for line in r.text.splitlines() if line.strip()]


def test_anonymous_and_tokenless_posts_are_refused(stack: tuple[Fortress, Admin, Sim]) -> None:
    _, admin, sim = stack
    sim.clear()
    with admin.client() as anon:
        for path in ("/playground", "/playground/embeddings"):
            assert anon.get(path).headers.get("location") == "/login"
        r = anon.post("/playground/chat", json=CHAT)
        assert r.status_code in (303, 403) and "model" not in r.text
    c, _ = admin.login()
    assert c.post("/playground/chat", json=CHAT).status_code == 403  # no CSRF header
    assert c.post("/playground/models", json={}, headers={"x-csrftoken": "forged"}).status_code == 403
    assert not [e for e in sim.requests() if e["path"] == "/api/chat"]  # nothing reached the backend


def test_stored_key_is_encrypted_used_for_chat_and_recorded(stack: tuple[Fortress, Admin, Sim]) -> None:
    home, admin, sim = stack
    c, token = admin.login()
    status, lines = _chat(c, token, CHAT)
    assert status == 400 and "create a playground key first" in lines[0]["error"]
    _make_key(c, token)
    (key_id, secret_enc), *_ = _rows(
        home, "SELECT key_id, secret_enc FROM playground_keys WHERE admin_name = 'admin'"
    )
    assert isinstance(secret_enc, bytes) and b"fk_" not in secret_enc and key_id.encode() not in secret_enc
    full = SecretBox(home.db.parent / "secrets.key").decrypt(secret_enc)
    assert full.startswith(f"fk_{key_id}_")
    assert full[12:].encode() not in home.db.read_bytes()  # the secret is nowhere in the database file
    page = c.get("/playground").text
    assert f"fk_{key_id}_" in page and full not in page  # the page names the key, never its secret
    assert _rows(
        home, "SELECT label, u.name FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?", key_id
    ) == [("playground (admin)", "pg-user")]

    answer = c.post("/playground/models", json={}, headers={"x-csrftoken": token}).json()
    assert "models" in answer, answer
    models = answer["models"]
    assert [m["name"] for m in models] == ["llama3.2:1b", "nomic-embed-text:latest"]
    sim.clear()
    status, lines = _chat(
        c, token, {**CHAT, "system": "Be brief.", "options": {"num_predict": 5, "seed": 42}}
    )
    assert status == 200
    assert "".join(line["message"]["content"] for line in lines) == "The quick brown fox jumps"
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 5
    (entry,) = [e for e in sim.requests() if e["path"] == "/api/chat"]
    headers = {k.lower(): v for k, v in entry["headers"]}
    assert "authorization" not in headers  # the proxy strips the key before the backend
    deadline = time.monotonic() + 5
    rows: list[tuple] = []
    while not rows and time.monotonic() < deadline:
        rows = _rows(
            home,
            "SELECT status, eval_count, user_name FROM usage WHERE key_id = ? AND path = '/api/chat'",
            key_id,
        )
        time.sleep(0.1)
    assert rows == [(200, 5, "pg-user")]


def test_a_new_playground_key_revokes_the_old_and_forget_revokes_it(
    stack: tuple[Fortress, Admin, Sim],
) -> None:
    home, admin, _ = stack
    c, token = admin.login()
    _make_key(c, token)
    ((old,),) = _rows(home, "SELECT key_id FROM playground_keys WHERE admin_name = 'admin'")
    _make_key(c, token)
    ((new,),) = _rows(home, "SELECT key_id FROM playground_keys WHERE admin_name = 'admin'")
    assert old != new
    assert _rows(home, "SELECT state FROM api_keys WHERE id = ?", old) == [("revoked",)]
    assert c.post(f"/keys/{new}/disable", data={"_csrf_token": token}).status_code == 303
    assert "Your playground key is disabled: create a new one" in c.get("/playground").text
    r = c.post("/playground/key/forget", data={"next": "/playground/embeddings", "_csrf_token": token})
    assert r.headers.get("location") == "/playground/embeddings"
    assert _rows(home, "SELECT * FROM playground_keys") == []
    assert _rows(home, "SELECT state FROM api_keys WHERE id = ?", new) == [("revoked",)]
    assert ("admin", "playground.key") in _rows(home, "SELECT actor, action FROM audit")
    bad = c.post("/playground/key", data={"user": "nobody", "_csrf_token": token})
    assert bad.status_code == 400 and "no such user" in bad.text


def test_pasted_keys_and_proxy_refusals_become_clear_messages(stack: tuple[Fortress, Admin, Sim]) -> None:
    home, admin, _ = stack
    c, token = admin.login()
    status, lines = _chat(c, token, {**CHAT, "key": "not-a-key"})
    assert status == 400 and "does not look like a Fortress key" in lines[0]["error"]
    status, lines = _chat(c, token, {**CHAT, "key": "fk_abcdefgh_" + "A" * 40})
    assert status == 200 and "refused the key" in lines[-1]["error"]
    limited = home.key("pg-user", "--models", "nomic-*")
    models = c.post("/playground/models", json={"key": limited}, headers={"x-csrftoken": token}).json()
    assert [m["name"] for m in models["models"]] == ["nomic-embed-text:latest"]  # the key's allow-list
    status, lines = _chat(c, token, {**CHAT, "key": limited})
    assert "refused by the proxy's policy" in lines[-1]["error"]
    status, lines = _chat(
        c, token, {**CHAT, "key": limited, "model": "nomic-embed-text", "options": {"top_k": 3}}
    )
    assert status == 400 and "unknown option" in lines[0]["error"]
    assert c.post("/playground/chat", content=b"{", headers={"x-csrftoken": token}).json()["error"] == (
        "the request body is not JSON"
    )


def test_viewer_sees_the_page_but_cannot_use_it(stack: tuple[Fortress, Admin, Sim]) -> None:
    _, admin, sim = stack
    c, token = admin.login()
    r = c.post(
        "/settings/admins",
        data={
            "username": "pg-viewer",
            "new_password": "watching-you",
            "role": "viewer",
            "_csrf_token": token,
        },
    )
    assert r.status_code == 303
    v, vtoken = admin.login("pg-viewer", "watching-you")
    page = v.get("/playground")
    assert page.status_code == 200 and "read-only (viewer)" in page.text and 'id="pg-form"' not in page.text
    sim.clear()
    for path, body in [("/playground/chat", CHAT), ("/playground/models", {})]:
        assert v.post(path, json=body, headers={"x-csrftoken": vtoken}).status_code == 403
    assert v.post("/playground/key", data={"user": "pg-user", "_csrf_token": vtoken}).status_code == 403
    assert not [e for e in sim.requests() if e["path"] == "/api/chat"]


def test_embeddings_form_works_without_javascript(stack: tuple[Fortress, Admin, Sim]) -> None:
    _, admin, _ = stack
    c, token = admin.login()
    _make_key(c, token)
    form = {"sets": ["animals", "emotions"], "texts": "# planets\nMars\nVenus", "model_a": "nomic-embed-text"}
    r = c.post("/playground/embeddings", data={**form, "model_b": "", "_csrf_token": token}, timeout=30)
    assert r.status_code == 200
    assert r.text.count('<g class="point">') == 62 and r.text.count('<g class="legend">') == 3
    assert "Separation score" in r.text and "<figure" in r.text
    fragment = c.post(
        "/playground/embeddings",
        data={**form, "_csrf_token": token},
        headers={"HX-Request": "true"},
        timeout=30,
    ).text
    assert "<html" not in fragment and fragment.count('<g class="point">') == 62
    bad = c.post("/playground/embeddings", data={"model_a": "nomic-embed-text", "_csrf_token": token})
    assert bad.status_code == 400 and bad.text.count("choose a built-in set or type") == 1
    htmx_bad = c.post(
        "/playground/embeddings",
        data={"sets": ["animals"], "model_a": "no-such-model", "_csrf_token": token},
        headers={"HX-Request": "true"},
    )  # htmx swaps only 2xx answers: the error comes as a 200 fragment
    assert htmx_bad.status_code == 200 and "model &#39;no-such-model&#39; not found" in htmx_bad.text
    assert 'role="alert"' in htmx_bad.text and "<html" not in htmx_bad.text


def test_an_unreachable_proxy_is_named_not_a_traceback(admin: Admin) -> None:
    """The shared `admin` fixture has no proxy running."""
    c, token = admin.login()
    admin.home.cli("user", "add", "nobody-home")
    _make_key(c, token, "nobody-home")
    assert "is not reachable" in c.get("/playground").text
    status, lines = _chat(c, token, CHAT)
    assert status == 200 and "is not reachable" in lines[-1]["error"]


def _tls_login(url: str, cert: Path) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=cert), timeout=30)
    token = csrf(c.get("/login"))
    r = c.post("/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "_csrf_token": token})
    assert r.status_code == 303, r.text
    return c, token


def test_relay_to_an_https_proxy_trusts_only_its_own_certificate(tmp_path: Path, sim: Sim) -> None:
    home = make_fortress(tmp_path, [("local", sim.url)])
    for name in ("a", "b"):
        home.cli("cert", "--host", "127.0.0.1", "--out", str(tmp_path / name))
    base = home.config.read_text()
    tls = '[proxy]\ntls_cert = "{0}/cert.pem"\ntls_key = "{0}/key.pem"\n'
    home.config.write_text(_merge(base + tls.format(tmp_path / "a")))
    # a second admin reads the same database but believes the proxy's certificate is "b"
    other = tmp_path / "other.toml"
    admin_port = free_port()
    other.write_text(
        _merge(
            base.replace(f"127.0.0.1:{_admin_port(base)}", f"127.0.0.1:{admin_port}")
            + tls.format(tmp_path / "b")
        )
    )
    home.cli("user", "add", "tls-user")
    home.serve()
    good = start_admin(home)
    wrong = start([PY, "-m", "fortress", "admin", "--config", str(other)])
    try:
        wait_port(admin_port, wrong)
        c, token = _tls_login(f"https://127.0.0.1:{good.port}", tmp_path / "a" / "cert.pem")
        _make_key(c, token, "tls-user")
        status, lines = _chat(c, token, {**CHAT, "model": "llama3.2:latest", "options": {"num_predict": 3}})
        c.close()
        assert status == 200 and lines[-1]["eval_count"] == 3, lines
        w, wtoken = _tls_login(f"https://127.0.0.1:{admin_port}", tmp_path / "b" / "cert.pem")
        status, lines = _chat(w, wtoken, CHAT)
        w.close()
        assert "its certificate is not the configured one" in lines[-1]["error"], lines
    finally:
        stop(good.proc)
        stop(wrong)
        home.stop()


def _admin_port(config_text: str) -> int:
    return int(tomllib.loads(config_text)["admin"]["listen"].rsplit(":", 1)[1])
