"""A provider that fails before the first byte: the request is retried on another backend serving the same
model name, with that backend's own rewrite (here an Ollama backend, relayed raw). The name P/M is the
provider's, but an Ollama server may hold a model of that name too (`ollama cp qwen3 cloud/m1`), which
makes it a local fallback for the provider's model."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import ollama
import openai
import pytest

from tests.conftest import Sim
from tests.proxy.providers import Stack, provider_block, running

MODEL = "cloud/m1"


class Resetter:
    """A server that takes each connection and drops it before answering: a provider failing at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()  # linger 0: a reset, no answer

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def fallback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Resetter]]:
    resetter = Resetter()

    def tables(_: Sim) -> str:  # the failing provider wins every tie (weight): it is always tried first
        return provider_block("cloud", f"http://127.0.0.1:{resetter.port}/v1", ["m1"], weight=100)

    local = ("--models", f"{MODEL}:latest,llama3.2:latest")
    try:
        with running(tmp_path_factory.mktemp("fallback"), tables, *local) as s:
            c = ollama.Client(host=s.fortress.url, headers=s.auth)
            assert "llama3.2:latest" in [m.model for m in c.list().models]  # the Ollama side is polled
            yield s, resetter
    finally:
        resetter.close()


def test_a_provider_failing_before_the_first_byte_is_retried_on_another_backend(
    fallback: tuple[Stack, Resetter],
) -> None:
    stack, resetter = fallback
    c = ollama.Client(host=stack.fortress.url, headers={**stack.auth, "X-Request-ID": "fallback"})
    parts = list(c.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert resetter.accepted == 1  # the provider was tried first
    assert parts[-1].done and parts[-1].eval_count == 12 and "".join(p.message.content for p in parts)
    assert [r["path"] for r in stack.seen(stack.local)] == ["/api/chat"]  # sent on as it came: raw
    row = stack.fortress.usage({"fallback"}, "backend, status, model, eval_count")["fallback"]
    assert row == ("local", 200, MODEL, 12)
    answer = openai.OpenAI(base_url=f"{stack.fortress.url}/v1", api_key=stack.key, max_retries=0)
    done = answer.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content and done.model == MODEL
    assert resetter.accepted == 1  # the model is now loaded on the Ollama backend: it goes there first
