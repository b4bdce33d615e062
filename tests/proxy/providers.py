"""Helpers for the provider tests: simulators in provider mode behind a real Fortress, and what they saw."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress, start_sim, stop

PROVIDER_KEY = "sk-provider-secret-0123456789"
CREDENTIAL_ENV = "FORTRESS_TEST_PROVIDER_KEY"
CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"


def provider_sim(*flags: str, name: str = "prov", models: str = f"{CHAT_MODEL},{EMBED_MODEL}") -> Sim:
    """An OpenAI-compatible provider: the simulator in provider mode, asking for PROVIDER_KEY."""
    return start_sim(
        "--provider", "--api-key", PROVIDER_KEY, "--journal-bodies", "--models", models, name=name
    )


def provider_block(name: str, url: str, models: list[str], **fields: object) -> str:
    """A [[backends]] table for an openai-type backend; its credential is PROVIDER_KEY unless `fields` say."""
    values = {"type": "openai", "models": models, "credential_env": CREDENTIAL_ENV, **fields}
    lines = ["[[backends]]", f'name = "{name}"', f'url = "{url}"']
    lines += [f"{field} = {json.dumps(value)}" for field, value in values.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Stack:
    """Fortress with an Ollama backend ("local") and providers, and an ordinary key."""

    fortress: Fortress
    provider: Sim
    local: Sim
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def clear(self) -> None:
        self.provider.clear()
        self.local.clear()

    def seen(self, sim: Sim | None = None) -> list[dict]:
        """What a backend (the provider by default) received, the poller's probes and /api/show (the
        capabilities it learns) left out."""
        return [
            r for r in (sim or self.provider).requests() if r["method"] == "POST" and r["path"] != "/api/show"
        ]


@contextmanager
def running(tmp: Path, tables: Callable[[Sim], str], *local_flags: str) -> Iterator[Stack]:
    """A provider simulator, an Ollama one ("local", with `local_flags`), and Fortress over both with the
    backend tables `tables(provider)` adds; credentials come from the environment, as in production."""
    provider = provider_sim()
    local = start_sim(*local_flags, name="local")
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv(CREDENTIAL_ENV, PROVIDER_KEY)
            env.setenv("FORTRESS_TEST_WRONG_KEY", "sk-not-the-right-one-42")
            f = make_fortress(tmp, [("local", local.url)], tables(provider))
            f.serve()
            try:
                yield Stack(f, provider, local, f.key())
            finally:
                f.stop()
    finally:
        stop(provider.proc)
        stop(local.proc)


def provider_usage(provider: Sim, seen: dict) -> dict:
    """The usage the provider reports for a body it was sent, asked again without streaming."""
    body = json.loads(seen["body"])
    body.pop("stream_options", None)
    body["stream"] = False
    headers = {"Authorization": f"Bearer {PROVIDER_KEY}"}
    answer = httpx.post(f"{provider.url}{seen['path']}", json=body, headers=headers, timeout=10)
    return answer.json()["usage"]
