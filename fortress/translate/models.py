"""A provider's model `M` as Ollama lists it, named `P/M`: entries for /api/tags, /api/show and /api/ps.

A provider says almost nothing about its models (OpenAI's /models gives an id, a date and an owner),
so the details Ollama shows (format, family, parameter size, quantization) are left empty rather
than guessed; size is 0 since nothing is stored locally. Capabilities default to what a chat model
has (`completion`, `tools`), or `embedding` for names that say so; callers that know better pass them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fortress.translate.base import rfc3339nano

_EMPTY_DETAILS = {
    "parent_model": "",
    "format": "",
    "family": "",
    "families": None,
    "parameter_size": "",
    "quantization_level": "",
}


def public_name(provider: str, model: str) -> str:
    return f"{provider}/{model}"


def _stamp(epoch_s: float) -> str:
    return rfc3339nano(int(epoch_s * 1_000_000_000))


def _digest(name: str) -> str:
    """A stable 64-hex digest, as Ollama's entries carry one (there are no blobs to hash)."""
    return hashlib.sha256(f"provider-model:{name}".encode()).hexdigest()


def capabilities_for(model: str) -> list[str]:
    return ["embedding"] if "embed" in model.lower() else ["completion", "tools"]


def tag_entry(provider: str, model: str, modified_at: float) -> dict:
    """One item of /api/tags `models`; `modified_at` in epoch seconds (the provider's `created`, or now)."""
    name = public_name(provider, model)
    return {
        "name": name,
        "model": name,
        "modified_at": _stamp(modified_at),
        "size": 0,
        "digest": _digest(name),
        "details": dict(_EMPTY_DETAILS),
    }


def show_body(
    provider: str,
    model: str,
    modified_at: float,
    capabilities: Sequence[str] | None = None,
    context_length: int | None = None,
) -> dict:
    """The /api/show answer (the `ollama` client needs `model_info`, so it is always there)."""
    info: dict = {"general.architecture": "", "general.basename": model}
    if context_length:
        info["general.context_length"] = context_length
    return {
        "modelfile": f"# {public_name(provider, model)}: model {model} of the OpenAI-compatible provider"
        f" {provider}, served through Fortress\nFROM {public_name(provider, model)}\n",
        "parameters": "",
        "template": "",
        "details": dict(_EMPTY_DETAILS),
        "model_info": info,
        "capabilities": list(capabilities) if capabilities is not None else capabilities_for(model),
        "modified_at": _stamp(modified_at),
    }


def ps_entry(provider: str, model: str, expires_at: float, context_length: int | None = None) -> dict:
    """One /api/ps item: a provider model counts as loaded while in use (`expires_at`: epoch s)."""
    entry = tag_entry(provider, model, expires_at)
    del entry["modified_at"]
    entry.update(expires_at=_stamp(expires_at), size_vram=0)
    if context_length:
        entry["context_length"] = context_length
    return entry
