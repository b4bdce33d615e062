"""The admin's models page shows what each model can do: learnt by the running proxy (through its
proxy_stats reports) for Ollama backends, configured for providers."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admin.conftest import Admin, start_admin
from tests.conftest import Sim, make_fortress, start_sim, stop


@pytest.fixture
def sim() -> Iterator[Sim]:
    s = start_sim("--models", "llava:7b,qwen2.5:0.5b,nomic-embed-text", name="caps")
    yield s
    s.stop()


@pytest.fixture
def admin(tmp_path: Path, sim: Sim) -> Iterator[Admin]:
    provider = (
        "[[backends]]\n"
        'name = "prov"\n'
        f'url = "{sim.url}/v1"\n'
        'type = "openai"\n'
        'models = ["gpt-4o", "o3-mini"]\n'
        'capabilities = ["completion", "tools", "vision"]\n'
    )
    home = make_fortress(tmp_path, [("local", sim.url)], provider)
    a = start_admin(home)
    yield a
    stop(a.proc)
    home.stop()


def _cells(html: str, model: str) -> list[str]:
    """The text of each cell of the table row whose first cell names `model`."""
    row = re.search(rf"<tr><td><code>{re.escape(model)}</code></td>(.*?)</tr>", html, re.S)
    assert row, f"no row for {model}"
    return [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    ]


def test_capabilities_on_the_models_page(admin: Admin) -> None:
    client, _ = admin.login()
    before = client.get("/models").text
    assert "not known yet" in _cells(before, "llava:7b")  # no proxy running: nothing learnt
    admin.home.serve()
    end = time.monotonic() + 20
    while "completion, vision" not in _cells(page := client.get("/models").text, "llava:7b"):
        assert time.monotonic() < end, "the proxy's capabilities never reached the models page"
        time.sleep(0.2)
    assert "completion, tools" in _cells(page, "qwen2.5:0.5b")
    assert "embedding" in _cells(page, "nomic-embed-text:latest")
    assert _cells(page, "prov/gpt-4o") == ["prov", "completion, tools, vision"]
    assert _cells(page, "prov/o3-mini") == ["prov", "completion, tools, vision"]
