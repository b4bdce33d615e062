"""P/M in Ollama's listings: /api/tags, /api/show and /api/ps entries the ollama client accepts."""

from __future__ import annotations

import ollama

from fortress.translate.models import ps_entry, show_body, tag_entry

MODIFIED = 1_750_000_000.5


def test_tags_entry() -> None:
    entry = tag_entry("prov", "gpt-4o-mini", MODIFIED)
    assert entry["name"] == entry["model"] == "prov/gpt-4o-mini"
    assert entry["modified_at"] == "2025-06-15T15:06:40.5Z" and entry["size"] == 0
    assert len(entry["digest"]) == 64 and entry["digest"] != tag_entry("prov", "other", MODIFIED)["digest"]
    listed = ollama.ListResponse.model_validate({"models": [entry]})
    assert listed.models[0].model == "prov/gpt-4o-mini"


def test_show_body() -> None:
    shown = ollama.ShowResponse.model_validate(
        show_body("prov", "gpt-4o-mini", MODIFIED, context_length=128000)
    )
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo and shown.modelinfo["general.context_length"] == 128000
    assert "FROM prov/gpt-4o-mini" in (shown.modelfile or "")
    assert show_body("prov", "text-embedding-3-small", MODIFIED)["capabilities"] == ["embedding"]
    assert show_body("prov", "m", MODIFIED, capabilities=["completion", "vision"])["capabilities"] == [
        "completion",
        "vision",
    ]


def test_ps_entry() -> None:
    entry = ps_entry("prov", "gpt-4o-mini", MODIFIED + 300)
    running = ollama.ProcessResponse.model_validate({"models": [entry]})
    assert running.models[0].name == "prov/gpt-4o-mini" and running.models[0].size_vram == 0
    assert entry["expires_at"] == "2025-06-15T15:11:40.5Z" and "modified_at" not in entry
