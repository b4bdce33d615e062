"""The kinds and the target description, as pure code: no sockets."""

from __future__ import annotations

import pytest

from fortress.backends.kind import Refused, counts_from_tail, kind_named, kind_names
from fortress.backends.target import Target
from fortress.pipeline import routes
from fortress.pipeline.routes import Route
from fortress.state.snapshot import BackendRecord


class Request:
    """What the exchange shows a kind (the Outgoing protocol)."""

    def __init__(self, path: str, body: bytes | None, doc: dict | None, model: str | None) -> None:
        self.method = b"POST"
        self.route: Route = routes.classify(path)
        self.target_url = path.encode()
        self.body = body
        self.doc = doc
        self.model = model
        self.target = Target.from_record(BackendRecord("prov", "http://127.0.0.1:9/v1", type="openai"))


def test_registry_knows_the_kinds_and_names_the_known_ones() -> None:
    assert set(kind_names()) >= {"ollama", "openai"}
    assert not kind_named("ollama").static_models and kind_named("ollama").manages_models
    assert kind_named("openai").static_models and not kind_named("openai").manages_models
    with pytest.raises(ValueError, match="expected one of ollama, openai"):
        kind_named("vllm")


def test_target_from_url_userinfo_prefix_and_tls() -> None:
    t = Target.from_record(BackendRecord("a", "https://bob:p%40ss@gpu.example:8443/ollama/"))
    assert (t.host, t.port, t.ssl is not None) == ("gpu.example", 8443, True)
    assert t.host_header == b"gpu.example:8443" and t.prefix == b"/ollama"
    assert t.auth == (("Authorization", "Basic Ym9iOnBAc3M="),)  # bob:p@ss
    assert t.auth_lines == b"Authorization: Basic Ym9iOnBAc3M=\r\n"
    assert "p%40ss" not in repr(t) and "bob" not in repr(t)
    plain = Target.from_record(BackendRecord("b", "http://127.0.0.1:11434", credential="tok"))
    assert (plain.port, plain.ssl, plain.prefix, plain.auth_lines) == (
        11434,
        None,
        b"",
        b"Authorization: Bearer tok\r\n",  # a configured credential wins over none in the URL
    )
    with pytest.raises(ValueError, match="not an http"):
        Target.from_record(BackendRecord("c", "ftp://x"))
    with pytest.raises(ValueError, match="unknown backend type"):
        Target.from_record(BackendRecord("d", "http://x", type="nope"))


def test_endpoint_changes_only_with_what_reaches_the_backend() -> None:
    a = Target.from_record(BackendRecord("a", "http://h:1", weight=1))
    assert a.endpoint == Target.from_record(BackendRecord("a", "http://h:1", weight=5)).endpoint
    assert a.endpoint != Target.from_record(BackendRecord("a", "http://h:1", ca_bundle="/x.pem")).endpoint
    assert a.endpoint != Target.from_record(BackendRecord("a", "http://h:1", type="openai")).endpoint


def test_ollama_kind_relays_everything_raw() -> None:
    kind = kind_named("ollama")
    for path in ("/api/chat", "/v1/chat/completions", "/api/pull", "/v1/messages"):
        assert kind.serves(routes.classify(path))
        assert kind.rewrite(Request(path, b"{}", {}, "llama3"), "llama3") is None
    streamed = {"model": "llama3", "stream": True, "stream_options": {"include_usage": True}}
    assert kind.rewrite(Request("/v1/chat/completions", b"{...}", streamed, "llama3"), "llama3") is None


def test_openai_kind_renames_the_model_and_drops_the_v1_its_url_carries() -> None:
    kind = kind_named("openai")
    doc = {"model": "prov/gpt", "messages": []}
    rw = kind.rewrite(Request("/v1/chat/completions", b"{...}", doc, "prov/gpt"), "gpt")
    assert rw is not None and (rw.method, rw.path) == (b"POST", b"/chat/completions")
    assert rw.body == b'{"model":"gpt","messages":[]}' and rw.codec is not None
    assert doc["model"] == "prov/gpt"  # the client's body stays as it came, for a retry elsewhere
    named = kind.rewrite(Request("/v1/chat/completions", b"{...}", doc, "Prov/gpt"), "Prov/gpt")
    assert named is not None and b'"model":"gpt"' in (named.body or b"")  # an admin's X-Fortress-Backend
    own = kind.rewrite(Request("/v1/chat/completions", b"{...}", doc, "prov/prov/auto"), "prov/auto")
    assert own is not None and b'"model":"prov/auto"' in (own.body or b"")  # a provider's own "P/..." name
    with pytest.raises(Refused, match="/api/pull is not available") as refused:
        kind.rewrite(Request("/api/pull", b"{}", {}, "prov/gpt"), "gpt")
    assert refused.value.status == 400


def test_usage_from_the_tail_of_either_api() -> None:
    ollama = [b'{"done":false}\n{"done":true,"prompt_eval_count":12,', b'"eval_count":34}\n']
    assert counts_from_tail(ollama) == (12, 34, False)
    sse = [b'data: {"usage":{"prompt_tokens":5,"completion_tokens":7}}\n\n', b"data: [DONE]\n\n"]
    assert counts_from_tail(sse) == (5, 7, False)
    assert counts_from_tail([b'{"done":false}\n{"error":"model crashed"}\n']) == (None, None, True)
    delta = b'event: message_delta\ndata: {"usage":{"input_tokens":9,"output_tokens":4}}'
    assert counts_from_tail([b"data: {}\n\n", delta + b"\n\n", b"event: message_stop\n"]) == (9, 4, False)
