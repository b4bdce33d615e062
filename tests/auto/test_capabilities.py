"""Capabilities: /api/show parsed into a record, kept per digest, learnt once, providers from config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from fortress import config
from fortress.routing.capabilities import Capabilities, CapabilityStore, learn, parse_show
from fortress.routing.inventory import Inventory, model_key
from fortress.state.snapshot import BackendRecord
from tests.conftest import Sim


def show(capabilities: Any = ("completion",), **info: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"modelfile": "", "details": {}, "model_info": info}
    if capabilities is not None:
        body["capabilities"] = list(capabilities)
    return body


@pytest.mark.parametrize(
    ("payload", "names", "context", "params"),
    [
        (show(), {"completion"}, None, None),
        (show(("completion", "vision")), {"completion", "vision"}, None, None),
        (show(("embedding",)), {"embedding"}, None, None),
        (
            show(("completion", "tools", "thinking", "insert")),
            {"completion", "tools", "thinking", "insert"},
            None,
            None,
        ),
        (show(("Completion", " Tools ")), {"completion", "tools"}, None, None),  # tolerant of case/space
        (show(("completion", "audio")), {"completion", "audio"}, None, None),  # newer names are kept
        (show(None), {"completion"}, None, None),  # Ollama < 0.6.4: no capabilities field at all
        (show([]), set(), None, None),
        (
            show(
                **{
                    "general.architecture": "llama",
                    "llama.context_length": 131072,
                    "general.parameter_count": 8,
                }
            ),
            {"completion"},
            131072,
            8,
        ),
        # the architecture's own key wins over another *.context_length
        (
            show(**{"general.architecture": "qwen2", "x.context_length": 5, "qwen2.context_length": 32768}),
            {"completion"},
            32768,
            None,
        ),
        # no architecture named: any *.context_length
        (show(**{"gemma3.context_length": 8192}), {"completion"}, 8192, None),
        # junk values are ignored, not trusted
        (
            show(**{"general.architecture": "x", "x.context_length": "big", "general.parameter_count": -1}),
            {"completion"},
            None,
            None,
        ),
        (show(**{"general.architecture": "x", "x.context_length": True}), {"completion"}, None, None),
    ],
)
def test_parse_show(payload: dict, names: set[str], context: int | None, params: int | None) -> None:
    caps = parse_show(payload)
    assert caps.names == names
    assert caps.context_length == context
    assert caps.parameter_count == params


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "text",
        {"capabilities": ["completion"], "model_info": []},
        {"capabilities": "completion"},
        {"capabilities": [1, 2]},
    ],
)
def test_parse_show_refuses_other_shapes(payload: Any) -> None:
    with pytest.raises(ValueError, match="/api/show"):
        parse_show(payload)


def tags(*models: tuple[str, str], size: int = 1000) -> dict[str, Any]:
    return {"models": [{"name": n, "model": n, "digest": d, "size": size} for n, d in models]}


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """Answers /api/show from a table and counts the questions (the `show` callable learn() is given)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, backend: str, model: str) -> Any:
        self.asked.append((backend, model))
        answer = self.answers[model]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_learn_asks_once_per_digest_and_again_when_the_digest_changes() -> None:
    inv = Inventory()
    inv.set_tags("a", tags(("llava:7b", "d1"), ("qwen:1b", "d2")), now=1)
    inv.set_tags("b", tags(("llava:7b", "d1")), now=1)  # same digest elsewhere: not asked twice
    store = CapabilityStore()
    ask = Backend({"llava:7b": show(("completion", "vision")), "qwen:1b": show(("completion", "tools"))})
    assert await learn(store, inv, ask) == 2
    assert sorted(ask.asked) == [("a", "llava:7b"), ("a", "qwen:1b")]
    assert store.for_model(inv, "b", model_key("llava:7b")) == Capabilities(
        frozenset({"completion", "vision"})
    )
    generation = store.generation

    assert await learn(store, inv, ask) == 0  # nothing new: no question at all
    assert len(ask.asked) == 2 and store.generation == generation

    inv.set_tags("a", tags(("llava:7b", "d1"), ("qwen:1b", "d3")), now=2)  # qwen was re-pulled
    ask.answers["qwen:1b"] = show(("completion", "tools", "thinking"))
    assert await learn(store, inv, ask, backend="a") == 1
    assert ask.asked[-1] == ("a", "qwen:1b")
    assert store.for_model(inv, "a", model_key("qwen:1b")).names == {"completion", "tools", "thinking"}
    assert store.by_digest("d2") is None  # the old digest is listed nowhere any more: forgotten


async def test_learn_only_the_named_backend() -> None:
    inv = Inventory()
    inv.set_tags("a", tags(("m1", "d1")), now=1)
    inv.set_tags("b", tags(("m2", "d2")), now=1)
    ask = Backend({"m1": show(), "m2": show()})
    store = CapabilityStore()
    await learn(store, inv, ask, backend="b")
    assert ask.asked == [("b", "m2")]
    assert store.for_model(inv, "a", model_key("m1")) is None


async def test_a_failed_show_is_retried_later_and_does_not_stop_the_others() -> None:
    clock = Clock()
    inv = Inventory()
    inv.set_tags("a", tags(("bad", "d1"), ("junk", "d2"), ("good", "d3")), now=1)
    ask = Backend({"bad": ConnectionError("reset"), "junk": ["not", "an", "object"], "good": show()})
    store = CapabilityStore(clock=clock)
    assert await learn(store, inv, ask) == 1
    assert store.for_model(inv, "a", model_key("good")) is not None
    assert store.for_model(inv, "a", model_key("bad")) is None
    asked = len(ask.asked)
    assert await learn(store, inv, ask) == 0 and len(ask.asked) == asked  # cooling down: not asked
    clock.now += 61
    ask.answers["bad"] = show(("embedding",))
    assert await learn(store, inv, ask) == 1
    assert store.for_model(inv, "a", model_key("bad")).names == {"embedding"}


async def test_learn_lets_cancellation_through() -> None:
    import asyncio

    inv = Inventory()
    inv.set_tags("a", tags(("m", "d")), now=1)

    async def cancelled(_backend: str, _model: str) -> Any:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await learn(CapabilityStore(), inv, cancelled)


def test_models_without_a_digest_are_not_asked_about() -> None:
    inv = Inventory()
    inv.set_tags("a", {"models": [{"name": "m"}, {"name": "n", "digest": ""}]}, now=1)
    assert CapabilityStore().missing(inv) == []


def test_providers_get_configured_capabilities_and_a_safe_default() -> None:
    inv = Inventory()
    records = [
        BackendRecord(
            "oa",
            "https://api.example",
            type="openai",
            models=("gpt-4o",),
            capabilities=("completion", "vision", "tools"),
        ),
        BackendRecord("plain", "https://p.example", type="openai", models=("m",)),
        BackendRecord("local", "http://127.0.0.1:1"),
    ]
    for r in records:
        if r.type == "openai":
            inv.set_static(r.name, r.models)
    store = CapabilityStore()
    store.set_providers(records)
    assert store.for_model(inv, "oa", model_key("oa/gpt-4o")).names == {"completion", "vision", "tools"}
    assert store.for_model(inv, "plain", model_key("plain/m")).names == {"completion"}
    assert store.missing(inv) == []  # providers are never asked /api/show
    generation = store.generation
    store.set_providers(records)
    assert store.generation == generation  # unchanged configuration: cached views stay valid
    assert store.export(inv) == {
        "oa": {"oa/gpt-4o": ["completion", "tools", "vision"]},
        "plain": {"plain/m": ["completion"]},
    }


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ('["completion", "vision"]', None),
        ('["embedding"]', None),
        ('["completion", "telepathy"]', "backends[0].capabilities: unknown capability 'telepathy'"),
        ('["Vision"]', "unknown capability 'Vision'"),
        ("[]", "backends[0].capabilities: name at least one capability"),
        ('"completion"', "backends[0].capabilities: expected a list of strings"),
    ],
)
def test_config_capabilities_key_is_validated(value: str, error: str | None) -> None:
    import tomllib

    text = f'[[backends]]\nname = "oa"\nurl = "https://x.example"\ntype = "openai"\ncapabilities = {value}\n'
    if error is None:
        cfg = config.parse(tomllib.loads(text))
        assert cfg.backends[0].capabilities == tuple(tomllib.loads(text)["backends"][0]["capabilities"])
    else:
        with pytest.raises(config.ConfigError, match=re.escape(error)):
            config.parse(tomllib.loads(text))


def test_config_capabilities_default_and_reach_the_snapshot(tmp_path: Path) -> None:
    from fortress.state.load import file_backends

    path = tmp_path / "config.toml"
    path.write_text(
        '[[backends]]\nname = "oa"\nurl = "https://api.example/v1"\ntype = "openai"\nmodels = ["m"]\n'
        'capabilities = ["completion", "tools"]\n'
        '[[backends]]\nname = "other"\nurl = "https://o.example/v1"\ntype = "openai"\n'
    )
    records = file_backends(config.load(str(path)))
    assert [r.capabilities for r in records] == [("completion", "tools"), ("completion",)]


async def test_learn_from_a_real_simulator(tmp_path: Path) -> None:
    """The learn step over a tiny httpx /api/show call, against the simulator's real answers."""
    sim = Sim(tmp_path, ("--models", "llava:7b,deepseek-r1:7b,qwen2.5:0.5b,nomic-embed-text")).start()
    try:
        async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
            inv = Inventory()
            inv.set_tags("sim", (await client.get("/api/tags")).json(), now=1)

            async def fetch_show(_backend: str, model: str) -> Any:
                reply = await client.post("/api/show", json={"model": model})
                reply.raise_for_status()
                return reply.json()

            store = CapabilityStore()
            assert await learn(store, inv, fetch_show, backend="sim") == 4
        caps = {
            name: store.for_model(inv, "sim", model_key(name))
            for name in ("llava:7b", "deepseek-r1:7b", "qwen2.5:0.5b", "nomic-embed-text")
        }
        assert caps["llava:7b"].names == {"completion", "vision"}
        assert caps["deepseek-r1:7b"].names == {"completion", "thinking"}
        assert caps["qwen2.5:0.5b"].names == {"completion", "tools"}
        assert caps["nomic-embed-text"].names == {"embedding"}
        assert caps["qwen2.5:0.5b"].context_length == 32768
        assert caps["nomic-embed-text"].context_length == 2048
        assert caps["qwen2.5:0.5b"].parameter_count == 494032768
        shows = [r for r in sim.requests() if r["path"] == "/api/show"]
        assert len(shows) == 4  # once per digest, nothing else sent
    finally:
        sim.stop()
