"""Issue 2 acceptance: authentication, key lifecycle, blocked routes, errors, usage rows, secrets."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest

from tests.conftest import Fortress, Sim


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_missing_and_invalid_key_get_401_with_www_authenticate(fortress: Fortress) -> None:
    r = httpx.get(f"{fortress.url}/api/tags")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in r.json() and r.headers["X-Request-ID"]
    bad = httpx.get(f"{fortress.url}/api/tags", headers=auth("fk_abcdefgh_" + "A" * 43))
    assert bad.status_code == 401 and bad.json() == {"error": "invalid API key"}
    v1 = httpx.get(f"{fortress.url}/v1/models", headers=auth("nonsense"))
    assert v1.status_code == 401 and v1.json()["error"]["type"] == "authentication_error"


def test_x_api_key_header_works(fortress: Fortress) -> None:
    key = fortress.key()
    r = httpx.get(f"{fortress.url}/api/tags", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["models"]


def test_public_probes_need_no_key(fortress: Fortress) -> None:
    assert httpx.get(f"{fortress.url}/").text == "Ollama is running"
    head = httpx.head(f"{fortress.url}/")
    assert head.status_code == 200 and head.content == b""
    assert httpx.get(f"{fortress.url}/health").json() == {
        "status": "ok",
        "backends_healthy": 1,
        "backends_total": 1,
    }


def test_key_never_reaches_backend_nor_logs_nor_database(fortress: Fortress, sim: Sim) -> None:
    key = fortress.key()
    secret = key.split("_", 2)[2]
    sim.clear()
    r = httpx.post(
        f"{fortress.url}/api/generate",
        json={"model": "llama3.2", "prompt": "hi", "stream": False},
        headers={**auth(key), "Cookie": "session=abc", "X-Request-ID": "trace-42"},
    )
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "trace-42"
    seen = [q for q in sim.requests() if q["path"] == "/api/generate"]
    assert len(seen) == 1
    headers = {k.lower(): v for k, v in seen[0]["headers"]}
    assert "authorization" not in headers and "cookie" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-request-id"] == "trace-42"
    assert headers["host"] == f"127.0.0.1:{sim.port}"
    assert secret not in json.dumps(seen)
    time.sleep(0.6)  # let the usage batch land before reading the files
    logs = fortress.stop()
    assert secret not in logs and key not in logs
    for path in fortress.db.parent.iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_disable_enable_revoke_take_effect_within_a_second(fortress: Fortress) -> None:
    key = fortress.key()
    key_id = key.split("_")[1]
    url = f"{fortress.url}/api/tags"

    def status_within(expected: int, limit: float = 1.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit + 0.5:
            if httpx.get(url, headers=auth(key)).status_code == expected:
                return time.monotonic() - t0
            time.sleep(0.05)
        raise AssertionError(f"never got {expected}")

    assert httpx.get(url, headers=auth(key)).status_code == 200
    fortress.cli("key", "disable", key_id)
    assert status_within(401) <= 1.0
    assert httpx.get(url, headers=auth(key)).json() == {"error": "API key is disabled"}
    fortress.cli("key", "enable", key_id)
    assert status_within(200) <= 1.0
    fortress.cli("key", "revoke", key_id)
    assert status_within(401) <= 1.0
    again = fortress.cli("key", "enable", key_id, check=False)
    assert again.returncode != 0 and "revoked" in again.stderr
    assert httpx.get(url, headers=auth(key)).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/pull", {"model": "llama3.2"}),
        ("POST", "/api/push", {"model": "llama3.2"}),
        ("POST", "/api/create", {"model": "x", "from": "llama3.2"}),
        ("POST", "/api/copy", {"source": "llama3.2", "destination": "y"}),
        ("DELETE", "/api/delete", {"model": "llama3.2"}),
        ("POST", "/api/blobs/sha256:" + "a" * 64, None),
    ],
)
def test_model_management_is_refused_for_ordinary_keys(
    fortress: Fortress, sim: Sim, method: str, path: str, body: dict | None
) -> None:
    key = fortress.key()
    sim.clear()
    r = httpx.request(method, f"{fortress.url}{path}", json=body, headers=auth(key))
    assert r.status_code == 403 and "admin scope" in r.json()["error"]
    assert not [q for q in sim.requests() if q["path"] == path]


def test_admin_scope_key_may_manage_models(fortress: Fortress) -> None:
    key = fortress.key("root", "--scope", "admin")
    r = httpx.post(
        f"{fortress.url}/api/copy", json={"source": "llama3.2", "destination": "mine"}, headers=auth(key)
    )
    assert r.status_code == 200


def test_invalid_json_and_unknown_path(fortress: Fortress) -> None:
    key = fortress.key()
    bad = httpx.post(f"{fortress.url}/api/generate", content=b"{nope", headers=auth(key))
    assert bad.status_code == 400 and "invalid JSON" in bad.json()["error"]
    assert httpx.get(f"{fortress.url}/nothing", headers=auth(key)).status_code == 404
    unknown_api = httpx.post(f"{fortress.url}/api/secret-route", json={}, headers=auth(key))
    assert unknown_api.status_code == 404 and "error" in unknown_api.json()
    v1 = httpx.post(f"{fortress.url}/v1/chat/completions", content=b"[", headers=auth(key))
    assert v1.status_code == 400 and v1.json()["error"]["type"] == "invalid_request_error"


def test_usage_rows_for_streamed_and_plain_requests(fortress: Fortress) -> None:
    key = fortress.key()
    key_id = key.split("_")[1]
    body = {"model": "llama3.2", "prompt": "count"}
    streamed = httpx.post(f"{fortress.url}/api/generate", json=body, headers=auth(key))
    plain = httpx.post(f"{fortress.url}/api/generate", json={**body, "stream": False}, headers=auth(key))
    final = json.loads(streamed.text.splitlines()[-1])
    assert plain.status_code == streamed.status_code == 200
    fortress.stop()  # graceful stop flushes the queue
    with sqlite3.connect(fortress.db) as db:
        rows = db.execute(
            "SELECT model, key_id, status, ttfb_ms, duration_ms, prompt_eval_count, eval_count, stream"
            " FROM usage WHERE path = '/api/generate' ORDER BY id"
        ).fetchall()
    assert len(rows) == 2
    for model, kid, status, ttfb, duration, prompt, completion, _stream in rows:
        assert (model, kid, status) == ("llama3.2", key_id, 200)
        assert 0 < ttfb <= duration
        assert prompt == final["prompt_eval_count"] and completion == final["eval_count"]
    assert [r[7] for r in rows] == [1, 0]


def test_proxy_stats_row_reports_live_figures_and_window_fill(fortress: Fortress) -> None:
    key = fortress.key("bob", "--rate", "100/1m")
    for _ in range(3):
        assert httpx.get(f"{fortress.url}/api/tags", headers=auth(key)).status_code == 200
    key_id = key.split("_")[1]
    # the row is rewritten periodically: one written while these requests ran shows part of them, so wait
    # for one written after them all (generously: a busy machine writes it late)
    deadline = time.monotonic() + 30
    while True:
        with sqlite3.connect(fortress.db) as db:
            row = db.execute("SELECT requests, in_flight, detail FROM proxy_stats").fetchone()
        detail = json.loads(row[2]) if row else {}
        used = detail.get("keys", {}).get(key_id, {}).get("used")
        if (used == 4 and row[0] >= 3 and row[1] == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert row is not None and row[0] >= 3 and row[1] == 0
    assert detail["keys"][key_id] == {"used": 4, "limit": 100, "window_s": 60}  # 3 + the key's warm-up
    assert detail["backends"][0]["name"] == "local" and detail["backends"][0]["state"] == "closed"


def test_refusals_after_a_valid_key_are_charged_to_that_key(fortress: Fortress) -> None:
    """A 403 (blocked path, model not allowed) or 429 (rate) once the key is known: its usage row names the
    key and its user, so analytics shows who was refused."""
    plain = fortress.key("carol")
    narrow = fortress.key("dave", "--models", "other*")
    spent = fortress.key("erin", "--rate", "1/1h")  # the warm-up request in fortress.key() used it up
    calls = {
        "refused-blocked": ("POST", "/api/pull", {"model": "llama3.2"}, plain, 403, "carol"),
        "refused-model": ("POST", "/api/generate", {"model": "llama3.2"}, narrow, 403, "dave"),
        "refused-rate": ("GET", "/api/tags", None, spent, 429, "erin"),
    }
    for rid, (method, path, body, key, status, _user) in calls.items():
        r = httpx.request(
            method, f"{fortress.url}{path}", json=body, headers={**auth(key), "X-Request-ID": rid}
        )
        assert r.status_code == status, r.text
    rows = fortress.usage(set(calls), "key_id, user_name, status")
    assert rows == {
        rid: (key.split("_")[1], user, status) for rid, (_m, _p, _b, key, status, user) in calls.items()
    }
