"""Inventory: Ollama's name matching, the model -> backends index, and junk tolerance."""

from __future__ import annotations

import pytest

from fortress.routing.inventory import Inventory, model_key, parse_time

from .helpers import ps, tags


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("llama3", "llama3:latest"),
        ("Llama3:LATEST", "llama3:latest"),
        ("library/llama3", "llama3:latest"),
        ("registry.ollama.ai/library/llama3:8b", "llama3:8b"),
        ("hf.co/user/Model:Q4", "hf.co/user/model:q4"),
        ("myhost:5000/ns/model", "myhost:5000/ns/model:latest"),
        ("ns/model", "ns/model:latest"),
    ],
)
def test_model_key_follows_ollama_matching(name: str, key: str) -> None:
    assert model_key(name) == key


def test_parse_time_accepts_go_nanoseconds_and_offsets() -> None:
    assert parse_time("2025-10-26T17:15:24.097767123Z") == pytest.approx(1761498924.097767)
    assert parse_time("2024-05-01T10:00:00-07:00") == 1714582800.0
    assert parse_time("yesterday") == 0.0
    assert parse_time(None) == 0.0


def test_index_maps_models_to_holders_and_loaded() -> None:
    inv = Inventory()
    inv.set_tags("a", tags("llama3:latest", "qwen:7b"), now=1.0)
    inv.set_tags("b", tags("llama3"), now=1.0)
    inv.set_ps("b", ps("llama3"))
    assert sorted(inv.holders("llama3:latest")) == ["a", "b"]
    assert inv.holders("qwen:7b") == ("a",)
    assert inv.holders("nope:latest") == ()
    assert inv.loaded_on("llama3:latest") == {"b"}
    assert inv.loaded_count("b") == 1


def test_refresh_replaces_the_previous_list() -> None:
    inv = Inventory()
    inv.set_tags("a", tags("x", "y"), now=1.0)
    generation = inv.generation
    inv.set_tags("a", tags("y"), now=2.0)
    assert inv.holders("x:latest") == ()
    assert inv.holders("y:latest") == ("a",)
    assert inv.generation > generation
    assert inv.get("a").refreshed_at == 2.0


def test_models_kept_exactly_as_received() -> None:
    inv = Inventory()
    payload = tags("m")
    payload["models"][0]["remote_host"] = "x"
    inv.set_tags("a", payload, now=1.0)
    assert inv.get("a").models["m:latest"] is payload["models"][0]


@pytest.mark.parametrize("payload", [[], {"models": 3}, "x", {"version": 1}])
def test_wrong_shapes_are_refused(payload: object) -> None:
    inv = Inventory()
    with pytest.raises(ValueError):
        inv.set_tags("a", payload, now=1.0)
    with pytest.raises(ValueError):
        inv.set_ps("a", payload)


def test_junk_entries_are_skipped_and_null_list_is_empty() -> None:
    inv = Inventory()
    inv.set_tags("a", {"models": [1, {"size": 3}, {"name": ""}, {"model": "ok"}]}, now=1.0)
    assert list(inv.get("a").models) == ["ok:latest"]
    inv.set_ps("a", {"models": None})
    assert inv.loaded_on("ok:latest") == frozenset()


def test_version_must_be_a_string() -> None:
    inv = Inventory()
    inv.set_version("a", {"version": "0.12.6"})
    assert inv.get("a").version == "0.12.6"
    with pytest.raises(ValueError):
        inv.set_version("a", {"version": 12})


def test_mark_loaded_is_optimistic_until_the_next_ps() -> None:
    inv = Inventory()
    inv.set_tags("a", tags("m"), now=1.0)
    inv.mark_loaded("a", "m:latest")
    assert inv.loaded_on("m:latest") == {"a"}
    assert inv.get("a").loaded == {}  # /api/ps data stays what the backend said
    inv.set_ps("a", ps())
    assert inv.loaded_on("m:latest") == frozenset()


def test_forget_drops_a_missing_model_until_refresh() -> None:
    inv = Inventory()
    inv.set_tags("a", tags("m"), now=1.0)
    inv.set_tags("b", tags("m"), now=1.0)
    inv.forget("a", "m:latest")
    assert inv.holders("m:latest") == ("b",)


def test_static_provider_models_and_unrefreshed_backends() -> None:
    inv = Inventory()
    inv.set_static("openai", ["gpt-4o"])
    inv.add("fresh")
    assert inv.holders("openai/gpt-4o:latest") == ("openai",)
    assert inv.served_name("openai", "openai/gpt-4o:latest") == "gpt-4o"
    assert inv.unrefreshed() == ("fresh",)
    inv.set_tags("fresh", tags(), now=1.0)
    assert inv.unrefreshed() == ()
    inv.remove("openai")
    assert inv.holders("openai/gpt-4o:latest") == ()
