"""Issue 4: model management across backends: pull on one named backend, or on all with `*`."""

from __future__ import annotations

import json

import httpx

from fortress.proxy.fanout import Outcome, final_line, merged_body, parse_line, tagged, wants_stream
from tests.multi.conftest import Three, auth, wait_until


def tags_of(three: Three, name: str) -> set[str]:
    return {m["name"] for m in httpx.get(f"{three.sims[name].url}/api/tags").json()["models"]}


def pull(three: Three, model: str, backend: str, **body: object) -> httpx.Response:
    return httpx.post(
        f"{three.fortress.url}/api/pull",
        json={"model": model, **body},
        headers={**auth(three.admin), "X-Fortress-Backend": backend},
        timeout=20,
    )


def test_pull_on_one_backend_makes_the_model_routable_without_restart(three: Three) -> None:
    f = three.fortress
    body = {"model": "gemma3:1b", "prompt": "hi", "stream": False}
    assert httpx.post(f"{f.url}/api/generate", json=body, headers=auth(three.key)).status_code == 404
    r = pull(three, "gemma3:1b", "b")
    assert r.status_code == 200 and json.loads(r.text.splitlines()[-1]) == {"status": "success"}
    assert "gemma3:1b" in tags_of(three, "b") and "gemma3:1b" not in tags_of(three, "a")
    three.clear()
    wait_until(
        lambda: httpx.post(f"{f.url}/api/generate", json=body, headers=auth(three.key)).status_code == 200,
        2,
        "pulled model routable",
    )
    assert three.seen("/api/generate")["b"] >= 1
    assert three.seen("/api/generate")["a"] == three.seen("/api/generate")["c"] == 0
    named = httpx.get(f"{f.url}/api/tags", headers=auth(three.key)).json()["models"]
    assert "gemma3:1b" in {m["name"] for m in named}


def test_pull_on_every_backend_merges_the_progress_streams(three: Three) -> None:
    three.clear()
    r = pull(three, "smollm:135m", "*")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[-1] == {"status": "success", "backends": ["a", "b", "c"]}
    for line in lines[:-1]:
        assert next(iter(line)) == "backend" and line["backend"] in {"a", "b", "c"}
        assert "error" not in line
    for name in ("a", "b", "c"):
        own = [line["status"] for line in lines if line.get("backend") == name]
        assert own[0] == "pulling manifest" and own[-1] == "success"
        assert "smollm:135m" in tags_of(three, name)
    assert three.seen("/api/pull") == {"a": 1, "b": 1, "c": 1}


def test_pull_everywhere_without_stream_answers_one_object(three: Three) -> None:
    r = pull(three, "smollm:135m", "*", stream=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == {
        "status": "success",
        "backends": [{"backend": n, "code": 200, "status": "success"} for n in ("a", "b", "c")],
    }


def test_a_failing_pull_is_reported_per_backend_and_at_the_end(three: Three) -> None:
    r = pull(three, "doesnotexist:1b", "*")
    lines = [json.loads(line) for line in r.text.splitlines()]
    errors = {line["backend"]: line["error"] for line in lines if "backend" in line and "error" in line}
    assert set(errors) == {"a", "b", "c"} and "file does not exist" in errors["a"]
    assert set(lines[-1]) == {"error"} and lines[-1]["error"].startswith("failed on 3 of 3 backends: a:")
    flat = pull(three, "doesnotexist:1b", "*", stream=False)
    assert flat.status_code == 500 and [row["code"] for row in flat.json()["backends"]] == [500] * 3


def test_pulls_refused_for_a_bad_model_do_not_trip_the_breakers(three: Three) -> None:
    """Ollama's 500 {"error": ...} for a model it cannot pull is the request's answer, not the backend
    failing: like the hot path (routing/health.answered), fan-out counts it as the backend working."""
    f = three.fortress
    for _ in range(4):  # above the default threshold of 3 consecutive failures
        assert pull(three, "doesnotexist:1b", "*", stream=False).status_code == 500
    detail = httpx.get(f"{f.url}/health", headers=auth(three.admin)).json()["backends"]
    assert {b["name"]: b["breaker"] for b in detail} == {"a": "closed", "b": "closed", "c": "closed"}


def test_delete_everywhere_then_again(three: Three) -> None:
    f = three.fortress
    headers = {**auth(three.admin), "X-Fortress-Backend": "*"}
    r = httpx.request("DELETE", f"{f.url}/api/delete", json={"model": "smollm:135m"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "success" and [row["code"] for row in r.json()["backends"]] == [200] * 3
    assert all("smollm:135m" not in tags_of(three, name) for name in three.sims)
    again = httpx.request("DELETE", f"{f.url}/api/delete", json={"model": "smollm:135m"}, headers=headers)
    assert again.status_code == 404 and "failed on 3 of 3 backends" in again.json()["error"]
    assert {row["backend"] for row in again.json()["backends"]} == {"a", "b", "c"}


def test_star_is_for_admin_keys_and_model_management_only(three: Three) -> None:
    f = three.fortress
    refused = httpx.post(
        f"{f.url}/api/pull", json={"model": "smollm"}, headers={**auth(three.key), "X-Fortress-Backend": "*"}
    )
    assert refused.status_code == 403
    wrong = httpx.post(
        f"{f.url}/api/generate",
        json={"model": "llama3.2", "prompt": "x"},
        headers={**auth(three.admin), "X-Fortress-Backend": "*"},
    )
    assert wrong.status_code == 400 and "only to /api/pull and /api/delete" in wrong.json()["error"]


def test_merge_rules() -> None:
    assert tagged("a", {"status": "x", "backend": "spoof"}) == b'{"backend": "a", "status": "x"}\n'
    assert parse_line(b"404 page not found") == {"error": "404 page not found"}
    assert wants_stream("/api/pull", b'{"model":"m"}') and not wants_stream("/api/pull", b'{"stream":false}')
    assert not wants_stream("/api/delete", b"{}")
    ok, bad = Outcome("a", 200, {"status": "success"}), Outcome("b", 502, {"error": "down"})
    assert json.loads(final_line([ok])) == {"status": "success", "backends": ["a"]}
    assert json.loads(final_line([ok, bad])) == {"error": "failed on 1 of 2 backends: b: down"}
    status, body = merged_body([ok, Outcome("c", 200, {"error": "late"}), Outcome("d", 404, {})])
    assert status == 502 and json.loads(body)["error"].endswith("c: late; d: HTTP 404")
