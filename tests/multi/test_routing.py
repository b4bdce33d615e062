"""Issue 4: requests go only to backends that hold the model; loaded copies win; load spreads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.multi.conftest import Three, auth


def generate(three: Three, model: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{three.fortress.url}/api/generate",
        json={"model": model, "prompt": "hi", "stream": False},
        headers={**auth(three.key), **headers},
        timeout=10,
    )


def test_model_on_one_backend_goes_only_there(three: Three) -> None:
    three.clear()
    for model in ("llama3.2", "phi3:latest", "LLAMA3.2:latest"):
        for _ in range(4):
            r = generate(three, model)
            assert r.status_code == 200, r.text
    assert three.seen("/api/generate") == {"a": 8, "b": 0, "c": 4}


def test_unknown_model_is_404_in_each_shape(three: Three) -> None:
    r = generate(three, "nosuch:7b")
    assert r.status_code == 404 and r.json() == {"error": "model 'nosuch:7b' not found"}
    v1 = httpx.post(
        f"{three.fortress.url}/v1/chat/completions",
        json={"model": "nosuch", "messages": [{"role": "user", "content": "x"}]},
        headers=auth(three.key),
    )
    assert v1.status_code == 404 and v1.json()["error"]["type"] == "not_found_error"


def test_the_only_backend_with_the_model_loaded_wins_every_time(three: Three) -> None:
    three.clear()
    for _ in range(12):
        assert generate(three, "qwen2.5:0.5b").status_code == 200
    assert three.seen("/api/generate") == {"a": 0, "b": 0, "c": 12}


def test_load_spreads_over_backends_that_have_it_loaded(three: Three) -> None:
    three.clear()
    for _ in range(10):  # one at a time: ties go round robin
        assert generate(three, "mistral").status_code == 200
    sequential = three.seen("/api/generate")
    assert sequential["a"] == 0 and sequential["b"] == sequential["c"] == 5, sequential
    three.clear()
    slow = {"X-Sim-Tokens": "10", "X-Sim-Rate": "50"}  # 0.2 s each: they overlap
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: generate(three, "mistral", **slow), range(16)))
    assert all(r.status_code == 200 for r in answers)
    concurrent = three.seen("/api/generate")
    assert concurrent["a"] == 0 and concurrent["b"] + concurrent["c"] == 16
    assert min(concurrent["b"], concurrent["c"]) >= 6, concurrent  # least outstanding keeps them even


def test_openai_route_follows_the_same_rules(three: Three) -> None:
    three.clear()
    for _ in range(3):
        r = httpx.post(
            f"{three.fortress.url}/v1/chat/completions",
            json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]},
            headers=auth(three.key),
        )
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    assert three.seen("/v1/chat/completions") == {"a": 3, "b": 0, "c": 0}
