"""`/v1` answers relayed with exact usage: the hidden usage chunk, the client's model name, errors, cuts."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from fortress.translate import OpenAIRelay, ask_for_usage, rename_model
from tests.translate.conftest import JSON_HEADERS, SSE_HEADERS, chunk, text_stream, usage

STREAM = text_stream(["Hel", "lo"], prompt=11).replace(b"\n\ndata: {", b"\n\n: keep-alive\n\ndata: {", 1)
USAGE_CHUNK = chunk(None, usage=usage(11, 2))


def relay(
    data: bytes | list[bytes], *, wants: bool, model: str | None = None, headers=SSE_HEADERS, status=200
):
    codec = OpenAIRelay(client_wants_usage=wants, model=model)
    head = codec.head(status, headers)
    pieces = [data] if isinstance(data, bytes) else data
    return codec, head, b"".join(codec.feed(piece) for piece in pieces) + codec.end()


def test_ask_for_usage() -> None:
    body = {"stream": True}
    assert ask_for_usage(body) is False and body["stream_options"] == {"include_usage": True}
    body = {"stream": True, "stream_options": {"include_usage": False, "other": 1}}
    assert ask_for_usage(body) is False and body["stream_options"] == {"include_usage": True, "other": 1}
    body = {"stream": True, "stream_options": {"include_usage": True}}
    assert ask_for_usage(body) is True and body == {"stream": True, "stream_options": {"include_usage": True}}
    body = {"stream": False}
    assert ask_for_usage(body) is True and body == {"stream": False}  # non-streamed answers carry usage


def test_usage_chunk_is_hidden_from_a_client_that_did_not_ask_and_read_anyway() -> None:
    codec, head, out = relay(STREAM, wants=False)
    assert head == (200, b"text/event-stream; charset=utf-8")
    assert out == STREAM.replace(USAGE_CHUNK, b"")  # everything else byte for byte
    assert (codec.prompt_tokens, codec.completion_tokens) == (11, 2)


def test_usage_chunk_reaches_a_client_that_asked() -> None:
    codec, _, out = relay(STREAM, wants=True)
    assert out == STREAM and codec.completion_tokens == 2


def test_usage_riding_on_a_content_chunk_is_kept() -> None:
    stream = chunk({"content": "x"}, "stop", usage=usage(1, 1)) + b"data: [DONE]\n\n"
    codec, _, out = relay(stream, wants=False)
    assert out == stream and codec.prompt_tokens == 1


def test_model_renamed_in_every_chunk_and_in_json() -> None:
    _, _, out = relay(STREAM, wants=True, model="prov/gpt-4o-mini")
    assert out == STREAM.replace(b'"model":"gpt-4o-mini"', b'"model":"prov/gpt-4o-mini"')
    answer = {"id": "x", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18", "usage": usage(3, 4)}
    codec, head, out = relay(
        json.dumps(answer).encode(), wants=True, model="prov/gpt-4o-mini", headers=JSON_HEADERS
    )
    assert head == (200, b"application/json")
    assert json.loads(out) == {**answer, "model": "prov/gpt-4o-mini"}
    assert (codec.prompt_tokens, codec.completion_tokens) == (3, 4)


def test_rename_model_edges() -> None:
    quoted = b'"p/m"'
    assert rename_model(b'{"model" :  "a\\"b\\\\","x":1}', quoted) == b'{"model" :  "p/m","x":1}'
    assert rename_model(b'{"content":"say \\"model\\": \\"x\\"","model":"m"}', quoted) == (
        b'{"content":"say \\"model\\": \\"x\\"","model":"p/m"}'
    )
    for untouched in (b'{"model":null}', b'{"id":1}', b'{"model":"unterminated', b'{"model"'):
        assert rename_model(untouched, quoted) is untouched


def test_provider_errors_pass_through_except_credential_ones() -> None:
    body = b'{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":null}}'
    _, head, out = relay(body, wants=False, headers=JSON_HEADERS, status=400)
    assert head == (400, b"application/json") and out == body
    refused = b'{"error":{"message":"Incorrect API key provided: sk-pro****cret","code":"invalid_api_key"}}'
    _, head, out = relay(refused, wants=False, headers=JSON_HEADERS, status=401)
    assert head == (502, b"application/json; charset=utf-8") and b"sk-pro" not in out
    assert json.loads(out)["error"]["message"] == "the provider refused the gateway's credential (HTTP 401)"


def test_cut_ends_a_stream_with_one_error_event() -> None:
    codec = OpenAIRelay(client_wants_usage=False)
    codec.head(200, SSE_HEADERS)
    out = codec.feed(STREAM[:200]) + codec.cut("backend connection lost")
    last = out.rsplit(b"\n\n", 2)[-2]
    assert json.loads(last.removeprefix(b"data: "))["error"]["message"] == "backend connection lost"


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30), st.booleans())
def test_any_resplitting_gives_the_same_bytes(cuts: list[int], wants: bool) -> None:
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert relay(pieces, wants=wants, model="p/m")[2] == relay(STREAM, wants=wants, model="p/m")[2]


def test_rename_follows_a_model_that_changes_or_goes_missing() -> None:
    stream = (
        chunk({"content": "a"}, model="m-1") + chunk({"content": "b"}, model="m-2") + b'data: {"x":1}\n\n'
    )
    _, _, out = relay(stream + chunk({"content": "c"}, model="m-1"), wants=True, model="p/m")
    assert out.count(b'"model":"p/m"') == 3 and b"m-1" not in out and b"m-2" not in out
    assert b'data: {"x":1}\n\n' in out


def test_keep_alive_comments_reach_the_client() -> None:
    _, _, out = relay(STREAM, wants=False, model="p/m")
    assert out.count(b": keep-alive\n\n") == 1
