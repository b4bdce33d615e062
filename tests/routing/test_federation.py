"""Federated lists: merged over healthy backends, deduplicated, filtered, in Ollama's/OpenAI's shapes."""

from __future__ import annotations

import json
import time

from fortress.routing import federation
from fortress.routing.inventory import Inventory, model_key, parse_time
from fortress.translate.models import ps_entry, tag_entry

from .helpers import ps, tag


def inventory() -> Inventory:
    inv = Inventory()
    inv.set_tags("a", {"models": [tag("llama3:latest", "2025-01-01T00:00:00Z", "a" * 64), tag("qwen:7b")]}, 0)
    inv.set_tags("b", {"models": [tag("llama3:latest", "2025-06-01T00:00:00.123456789Z", "b" * 64)]}, 0)
    inv.set_tags("down", {"models": [tag("secret:latest", "2026-01-01T00:00:00Z")]}, 0)
    inv.set_ps("a", ps("llama3:latest", expires_at="2030-01-01T00:00:00Z"))
    inv.set_ps("b", ps("llama3:latest", expires_at="2031-01-01T00:00:00Z"))
    inv.set_ps("down", ps("secret:latest"))
    inv.set_version("a", {"version": "0.12.10"})
    inv.set_version("b", {"version": "0.12.9"})
    inv.set_version("down", {"version": "0.1.0"})
    inv.set_static("oai", ["gpt-4o"])
    return inv


HEALTHY = frozenset({"a", "b", "oai"})


def test_tags_dedup_newest_wins_and_unhealthy_hidden() -> None:
    body = json.loads(federation.tags(inventory(), HEALTHY - {"oai"}))
    assert [m["name"] for m in body["models"]] == ["llama3:latest", "qwen:7b"]
    assert body["models"][0]["digest"] == "b" * 64  # b's copy is newer


def test_tags_list_a_provider_s_models_as_ollama_entries_dated_when_adopted() -> None:
    before = time.time()
    inv = inventory()
    provider = json.loads(federation.tags(inv, HEALTHY))["models"][0]  # adopted now: the newest
    adopted = inv.get("oai").modified[model_key("oai/gpt-4o")]
    assert provider == tag_entry("oai", "gpt-4o", adopted) and adopted >= before
    assert provider["name"] == "oai/gpt-4o" and parse_time(provider["modified_at"]) >= before - 1
    inv.set_static("oai", ["gpt-4o"])  # a reload that changes nothing keeps the date
    assert json.loads(federation.tags(inv, HEALTHY))["models"][0] == provider
    hidden = json.loads(federation.tags(inv, HEALTHY, allow=lambda name: "/" not in name))["models"]
    assert "oai/gpt-4o" not in [m["name"] for m in hidden]


def test_ps_lists_a_provider_model_for_five_minutes_after_its_last_use() -> None:
    inv = inventory()
    assert "oai/gpt-4o" not in [m["name"] for m in json.loads(federation.ps(inv, HEALTHY))["models"]]
    inv.used("oai", model_key("oai/gpt-4o"))
    used = inv.get("oai").used[model_key("oai/gpt-4o")]
    soon = json.loads(federation.ps(inv, HEALTHY, now=used + 1))["models"]
    assert [m["name"] for m in soon] == ["llama3:latest", "oai/gpt-4o"]  # by expiry, latest first
    assert soon[1] == ps_entry("oai", "gpt-4o", used + federation.KEEP_ALIVE_S)
    later = json.loads(federation.ps(inv, HEALTHY, now=used + federation.KEEP_ALIVE_S + 1))["models"]
    assert [m["name"] for m in later] == ["llama3:latest"]
    assert json.loads(federation.ps(inv, HEALTHY - {"oai"}, now=used))["models"] == later


def test_show_of_a_provider_model_comes_from_its_configuration() -> None:
    inv = inventory()
    inv.set_static("emb", ["text-embed"], ["embedding"])
    shown = json.loads(federation.show(inv, HEALTHY | {"emb"}, "EMB/text-embed") or b"")
    assert shown["capabilities"] == ["embedding"] and "emb/text-embed" in shown["modelfile"]
    default = json.loads(federation.show(inv, HEALTHY, "oai/gpt-4o") or b"")
    assert default["capabilities"] == ["completion", "tools"]  # nothing configured: a chat model's
    assert federation.show(inv, HEALTHY, "llama3") is None  # an Ollama model: its backend answers
    assert federation.show(inv, HEALTHY, "emb/text-embed") is None  # its provider is not healthy


def test_ps_merges_loaded_latest_expiry() -> None:
    body = json.loads(federation.ps(inventory(), HEALTHY))
    assert [(m["name"], m["expires_at"]) for m in body["models"]] == [
        ("llama3:latest", "2031-01-01T00:00:00Z")
    ]
    assert json.loads(federation.ps(inventory(), HEALTHY, allow=lambda n: False)) == {"models": []}


def test_version_is_lowest_semver_among_healthy() -> None:
    assert json.loads(federation.version(inventory(), HEALTHY)) == {"version": "0.12.9"}
    inv = inventory()
    inv.set_version("b", {"version": "0.12.10-rc1"})
    assert json.loads(federation.version(inv, HEALTHY)) == {"version": "0.12.10-rc1"}
    inv.set_version("b", {"version": "garbage"})
    assert json.loads(federation.version(inv, HEALTHY)) == {"version": "0.12.10"}
    assert federation.version(inv, frozenset()) is None


def test_openai_models_list_includes_providers() -> None:
    body = json.loads(federation.openai_models(inventory(), HEALTHY))
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert set(by_id) == {"llama3:latest", "qwen:7b", "oai/gpt-4o"}
    assert by_id["llama3:latest"] == {
        "id": "llama3:latest",
        "object": "model",
        "created": 1748736000,
        "owned_by": "library",
    }
    assert by_id["oai/gpt-4o"]["owned_by"] == "oai"
    filtered = json.loads(federation.openai_models(inventory(), HEALTHY, allow=lambda n: "/" in n))
    assert [m["id"] for m in filtered["data"]] == ["oai/gpt-4o"]


def test_openai_single_model_echoes_id_and_respects_filter() -> None:
    body = json.loads(federation.openai_model(inventory(), HEALTHY, "Llama3"))
    assert body["id"] == "Llama3" and body["owned_by"] == "library"
    assert federation.openai_model(inventory(), HEALTHY, "secret") is None  # only on an unhealthy backend
    assert federation.openai_model(inventory(), HEALTHY, "qwen:7b", allow=lambda n: False) is None
    hf = Inventory()
    hf.set_tags("a", {"models": [tag("hf.co/someone/model:q4")]}, 0)
    assert json.loads(federation.openai_model(hf, {"a"}, "hf.co/someone/model:q4"))["owned_by"] == "someone"
