"""Issue 4: the lists a client sees are the union of every healthy backend's, filtered per key."""

from __future__ import annotations

import httpx

from tests.multi.conftest import Three, auth


def names(body: dict, field: str = "models", attr: str = "name") -> list[str]:
    return [m[attr] for m in body[field] or []]


def test_tags_is_the_union_without_duplicates(three: Three) -> None:
    r = httpx.get(f"{three.fortress.url}/api/tags", headers=auth(three.key))
    assert r.status_code == 200
    got = names(r.json())
    assert sorted(got) == ["llama3.2:latest", "mistral:latest", "phi3:latest", "qwen2.5:0.5b"]
    for m in r.json()["models"]:
        assert {"name", "model", "modified_at", "size", "digest", "details"} <= m.keys()


def test_ps_is_the_union_of_loaded_models(three: Three) -> None:
    got = names(httpx.get(f"{three.fortress.url}/api/ps", headers=auth(three.key)).json())
    assert len(got) == len(set(got))
    assert {"mistral:latest", "qwen2.5:0.5b"} <= set(got)
    assert "phi3:latest" not in got


def test_version_is_the_lowest(three: Three) -> None:
    r = httpx.get(f"{three.fortress.url}/api/version", headers=auth(three.key))
    assert r.json() == {"version": "0.11.4"}


def test_openai_models_merged(three: Three) -> None:
    body = httpx.get(f"{three.fortress.url}/v1/models", headers=auth(three.key)).json()
    assert body["object"] == "list"
    ids = names(body, "data", "id")
    assert sorted(ids) == ["llama3.2:latest", "mistral:latest", "phi3:latest", "qwen2.5:0.5b"]
    one = httpx.get(f"{three.fortress.url}/v1/models/phi3:latest", headers=auth(three.key))
    assert one.status_code == 200 and one.json()["id"] == "phi3:latest"


def test_allow_list_filters_every_list(three: Three) -> None:
    f = three.fortress
    key = f.key("bob", "--models", "mistral*,qwen2.5:*")
    h = auth(key)
    assert sorted(names(httpx.get(f"{f.url}/api/tags", headers=h).json())) == [
        "mistral:latest",
        "qwen2.5:0.5b",
    ]
    assert set(names(httpx.get(f"{f.url}/api/ps", headers=h).json())) <= {"mistral:latest", "qwen2.5:0.5b"}
    ids = names(httpx.get(f"{f.url}/v1/models", headers=h).json(), "data", "id")
    assert sorted(ids) == ["mistral:latest", "qwen2.5:0.5b"]
    hidden = httpx.get(f"{f.url}/v1/models/phi3:latest", headers=h)
    assert hidden.status_code == 404 and hidden.json()["error"]["type"] == "not_found_error"
    refused = httpx.post(f"{f.url}/api/generate", json={"model": "phi3", "prompt": "x"}, headers=h)
    assert refused.status_code == 403
