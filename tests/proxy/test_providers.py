"""OpenAI-compatible providers as backends: models under "<provider>/<model>", the provider's credential."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Fortress, Sim, make_fortress


@pytest.fixture
def gateway(tmp_path: Path, sim: Sim, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fortress]:
    monkeypatch.setenv("PROV_TOKEN", "provider-secret-123")
    provider = (
        "[[backends]]\n"
        'name = "prov"\n'
        f'url = "{sim.url}/v1"\n'
        'type = "openai"\n'
        'models = ["llama3.2"]\n'
        'credential_env = "PROV_TOKEN"\n'
    )
    f = make_fortress(tmp_path, [("local", sim.url)], provider)
    f.serve()
    yield f
    f.stop()


def test_provider_model_is_listed_and_served_under_its_prefix(gateway: Fortress, sim: Sim) -> None:
    key = gateway.key()
    c = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    ids = [m.id for m in c.models.list()]
    assert "prov/llama3.2" in ids and "llama3.2:latest" in ids
    sim.clear()
    done = c.chat.completions.create(model="prov/llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content
    seen = [q for q in sim.requests() if q["path"].endswith("/chat/completions")]
    assert [q["path"] for q in seen] == ["/v1/chat/completions"]
    headers = {k.lower(): v for k, v in seen[0]["headers"]}
    assert headers["authorization"] == "Bearer provider-secret-123"  # the provider's, not the client's
    assert key not in str(seen)


def test_provider_model_on_native_route_is_refused(gateway: Fortress) -> None:
    key = gateway.key()
    r = httpx.post(
        f"{gateway.url}/api/chat",
        json={"model": "prov/llama3.2", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 400 and "/v1" in r.json()["error"]
