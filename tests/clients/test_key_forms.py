"""Issue 11.2 (DESIGN §6.1): every way a client carries its key, with real clients, and the key never
reaches the backend (the simulator's journal, bodies included)."""

from __future__ import annotations

import json
import subprocess

import httpx
import ollama
import openai
import pytest

from tests.clients.conftest import new_key
from tests.conftest import Fortress, Sim

GEN = {"model": "llama3.2", "prompt": "hi", "stream": False}


@pytest.fixture(scope="module")
def key(gateway: Fortress) -> str:
    return new_key(gateway, "forms")


def with_credentials(url: str, user: str, password: str) -> str:
    return url.replace("http://", f"http://{user}:{password}@")


def curl(*args: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def assert_never_forwarded(backend: Sim, key: str) -> None:
    secret = key.split("_", 2)[2]
    seen = backend.requests()
    assert seen, "nothing reached the backend"
    for r in seen:
        assert secret not in json.dumps(r), r


def test_url_with_the_key_as_password_curl_and_httpx(gateway: Fortress, key: str, backend: Sim) -> None:
    backend.clear()
    code, body = curl(with_credentials(gateway.url, "me", key) + "/api/tags")
    assert code == 200 and json.loads(body)["models"]
    r = httpx.post(with_credentials(gateway.url, "x", key) + "/api/generate", json=GEN)
    assert r.status_code == 200 and r.json()["done"]
    assert_never_forwarded(backend, key)


def test_url_with_the_key_as_user(gateway: Fortress, key: str) -> None:
    code, _ = curl(with_credentials(gateway.url, key, "") + "/api/version")
    assert code == 200
    assert httpx.get(f"{gateway.url}/api/version", auth=(key, "unused")).status_code == 200


def test_ollama_client_basic_auth_and_environment(
    gateway: Fortress, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ollama-python drops user:password from `host`; it takes httpx's `auth` or OLLAMA_API_KEY instead
    c = ollama.Client(host=gateway.url, auth=("user", key))
    assert "llama3.2:latest" in [m.model for m in c.list().models]
    assert c.generate(model="llama3.2", prompt="hi").done
    monkeypatch.setenv("OLLAMA_API_KEY", key)
    assert ollama.Client(host=gateway.url).show("llama3.2").modelinfo is not None


def test_openai_client_and_anthropic_style_header(gateway: Fortress, key: str) -> None:
    o = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    assert "llama3.2:latest" in [m.id for m in o.models.list()]
    r = httpx.get(f"{gateway.url}/api/tags", headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    assert r.status_code == 200


def test_bare_authorization(gateway: Fortress, key: str) -> None:
    assert httpx.get(f"{gateway.url}/api/tags", headers={"Authorization": key}).status_code == 200
    code, _ = curl("-H", f"Authorization: {key}", f"{gateway.url}/api/ps")
    assert code == 200


def test_key_in_body_authenticates_and_is_removed(gateway: Fortress, key: str, backend: Sim) -> None:
    backend.clear()
    r = httpx.post(f"{gateway.url}/api/generate", json={**GEN, "api_key": key})
    assert r.status_code == 200 and r.json()["done"], r.text
    chat = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "api_key": key},
    )
    assert chat.status_code == 200 and chat.json()["choices"], chat.text
    bodies = [json.loads(q["body"]) for q in backend.requests() if q["method"] == "POST"]
    assert len(bodies) == 2 and all("api_key" not in b for b in bodies)
    assert_never_forwarded(backend, key)


def test_a_body_key_works_the_moment_it_is_shown(gateway: Fortress) -> None:
    fresh = new_key(gateway, "forms")
    assert httpx.post(f"{gateway.url}/api/generate", json={**GEN, "api_key": fresh}).status_code == 200


def test_key_in_body_refusals(gateway: Fortress, key: str) -> None:
    wrong = key[:-4] + "AAAA"
    for body in ({**GEN, "api_key": wrong}, {**GEN, "api_key": 42}, GEN):
        r = httpx.post(f"{gateway.url}/api/generate", json=body)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), r.text
    # routes whose body Fortress does not read take the key in a header, the URL or the query only
    assert httpx.get(f"{gateway.url}/api/tags", params={"x": "1"}).status_code == 401


def test_key_in_query_authenticates_and_is_removed(gateway: Fortress, key: str, backend: Sim) -> None:
    backend.clear()
    code, _ = curl(f"{gateway.url}/api/tags?api_key={key}")
    assert code == 200
    r = httpx.post(f"{gateway.url}/api/generate?api_key={key}&keep=1", json=GEN)
    assert r.status_code == 200
    paths = [q["path"] for q in backend.requests() if q["method"] == "POST"]
    assert paths == ["/api/generate?keep=1"]
    assert_never_forwarded(backend, key)


def test_off_by_default(fortress: Fortress) -> None:
    """Without key_in_query and key_in_body, those two forms are refused (header forms always work)."""
    key = fortress.key("defaults")
    assert httpx.get(f"{fortress.url}/api/tags?api_key={key}").status_code == 401
    assert httpx.post(f"{fortress.url}/api/generate", json={**GEN, "api_key": key}).status_code == 401
    assert httpx.get(f"{fortress.url}/api/tags", auth=("x", key)).status_code == 200
