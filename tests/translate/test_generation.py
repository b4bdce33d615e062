"""Provider answers -> Ollama /api/chat and /api/generate answers: streams, tool calls, errors, cuts."""

from __future__ import annotations

import json

import ollama
from hypothesis import given, settings
from hypothesis import strategies as st

from fortress.translate import GenerationCodec
from fortress.translate.generation import INCOMPLETE
from tests.translate.conftest import (
    JSON_HEADERS,
    SSE_HEADERS,
    chunk,
    event,
    lines,
    text_stream,
    ticking,
    usage,
)

MODEL = "prov/gpt-4o-mini"


Outcome = tuple[GenerationCodec, tuple[int, bytes], bytes]


def run(
    data: bytes | list[bytes], *, chat=True, stream=True, headers=SSE_HEADERS, status=200, step=10**6
) -> Outcome:
    codec = GenerationCodec(MODEL, chat=chat, stream=stream, clock=ticking(step))
    head = codec.head(status, headers)
    pieces = [data] if isinstance(data, bytes) else data
    out = b"".join(codec.feed(piece) for piece in pieces) + codec.end()
    return codec, head, out


def events_of(stream: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in stream.split(b"\n\n")[:-1]]


def test_chat_stream_golden() -> None:
    codec, head, out = run(events_of(text_stream(["Hel", 'lo "wörld"', "\n"], prompt=21)))
    assert head == (200, b"application/x-ndjson")
    # Clock readings 1 ms apart: start 0, head 1, one per read that makes lines (the first token at 2),
    # one for the final object.
    stamp = "2025-06-15T15:06:40.00{}Z".format

    def said(at: int, content: str, **rest: object) -> dict:
        return {
            "model": MODEL,
            "created_at": stamp(at),
            "message": {"role": "assistant", "content": content},
            **rest,
        }

    assert lines(out) == [
        said(2, "Hel", done=False),
        said(3, 'lo "wörld"', done=False),
        said(4, "\n", done=False),
        said(5, "", done=True, done_reason="stop", total_duration=5_000_000, load_duration=1_000_000,
             prompt_eval_count=21, prompt_eval_duration=1_000_000, eval_count=3, eval_duration=3_000_000),
    ]  # fmt: skip
    assert out.split(b"\n")[1] == (
        b'{"model":"prov/gpt-4o-mini","created_at":"2025-06-15T15:06:40.003Z",'
        b'"message":{"role":"assistant","content":"lo \\"w\xc3\xb6rld\\""},"done":false}'
    )
    assert (codec.prompt_tokens, codec.completion_tokens) == (21, 3)
    for line in out.splitlines():
        ollama.ChatResponse.model_validate_json(line)


def test_generate_stream_golden_and_length() -> None:
    _, _, out = run(text_stream(["The", " end"], finish="length"), chat=False)
    objects = lines(out)
    assert [o.get("response") for o in objects] == ["The", " end", ""]
    assert objects[0] == {
        "model": MODEL,
        "created_at": "2025-06-15T15:06:40.002Z",
        "response": "The",
        "done": False,
    }
    assert objects[-1]["done"] is True and objects[-1]["done_reason"] == "length"
    assert "message" not in objects[-1] and objects[-1]["eval_count"] == 2
    for line in out.splitlines():
        ollama.GenerateResponse.model_validate_json(line)


def test_created_at_is_rfc3339nano_without_trailing_zeros() -> None:
    _, _, out = run(text_stream(["a"]), step=123_450)
    assert lines(out)[0]["created_at"] == "2025-06-15T15:06:40.0002469Z"


def test_completions_source_for_raw_generate() -> None:
    def completion(text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return event({"id": "cmpl-1", "object": "text_completion", "model": "coder", "choices": [choice]})

    stream = completion("def") + completion(" f():") + completion("", "stop")
    stream += event({"id": "cmpl-1", "choices": [], "usage": usage(5, 2)}) + b"data: [DONE]\n\n"
    codec, _, out = run(stream, chat=False)
    objects = lines(out)
    assert "".join(o["response"] for o in objects) == "def f():"
    assert objects[-1]["prompt_eval_count"] == 5 and codec.completion_tokens == 2


def test_reasoning_becomes_thinking() -> None:
    stream = chunk({"role": "assistant", "reasoning_content": "Let me see."}) + chunk({"reasoning": " Yes."})
    stream += chunk({"content": "42"}) + chunk({}, "stop") + b"data: [DONE]\n\n"
    _, _, out = run(stream)
    messages = [o["message"] for o in lines(out)]
    assert messages[:3] == [
        {"role": "assistant", "content": "", "thinking": "Let me see."},
        {"role": "assistant", "content": "", "thinking": " Yes."},
        {"role": "assistant", "content": "42"},
    ]
    _, _, one = run(stream, stream=False)
    assert json.loads(one)["message"] == {
        "role": "assistant",
        "content": "42",
        "thinking": "Let me see. Yes.",
    }
    _, _, generated = run(stream, chat=False, stream=False)
    assert json.loads(generated)["thinking"] == "Let me see. Yes."


def tool_stream() -> bytes:
    """Two calls, OpenAI style: id and name first, arguments in fragments cut through escapes."""
    opening = {
        "index": 0,
        "id": "call_A",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    args0 = json.dumps({"city": 'Café "naïve" \\ ✓', "days": 3}, ensure_ascii=False)
    args1 = json.dumps({"q": "x"})
    events = [chunk({"role": "assistant", "content": None, "tool_calls": [opening], "refusal": None})]
    events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": args0[i : i + 3]}}]})
               for i in range(0, len(args0), 3)]  # fmt: skip
    second = {
        "index": 1,
        "id": "call_B",
        "type": "function",
        "function": {"name": "search", "arguments": args1[:4]},
    }
    events.append(chunk({"tool_calls": [second]}))
    events.append(chunk({"tool_calls": [{"index": 1, "function": {"arguments": args1[4:]}}]}))
    events += [chunk({}, "tool_calls"), chunk(None, usage=usage(30, 12)), b"data: [DONE]\n\n"]
    return b"".join(events)


CALLS = [
    {"id": "call_A", "function": {"index": 0, "name": "get_weather",
                                  "arguments": {"city": 'Café "naïve" \\ ✓', "days": 3}}},
    {"id": "call_B", "function": {"index": 1, "name": "search", "arguments": {"q": "x"}}},
]  # fmt: skip


def test_tool_call_fragments_are_assembled_into_one_line_with_parsed_arguments() -> None:
    _, _, out = run(tool_stream())
    calls_line, final = lines(out)
    assert calls_line["message"] == {"role": "assistant", "content": "", "tool_calls": CALLS}
    assert calls_line["done"] is False
    assert final["done_reason"] == "stop" and final["eval_count"] == 12  # Ollama says stop after tool calls
    parsed = ollama.ChatResponse.model_validate(calls_line)
    assert parsed.message.tool_calls and parsed.message.tool_calls[0].function.arguments["days"] == 3


def test_tool_calls_in_a_one_object_answer_from_a_stream_and_from_json() -> None:
    _, head, out = run(tool_stream(), stream=False)
    assert head == (200, b"application/json; charset=utf-8")
    answer = json.loads(out)
    assert answer["message"]["tool_calls"] == CALLS and answer["done"] is True
    weather = {"name": "get_weather", "arguments": json.dumps(CALLS[0]["function"]["arguments"])}
    search = {"name": "search", "arguments": '{"q": "x"}'}
    calls = [{"id": "call_A", "type": "function", "function": weather},
             {"id": "call_B", "type": "function", "function": search}]  # fmt: skip
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    choice = {"index": 0, "finish_reason": "tool_calls", "message": message}
    whole = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice], "usage": usage(30, 12)}
    codec, _, out = run(json.dumps(whole).encode(), stream=False, headers=JSON_HEADERS)
    answer = json.loads(out)
    assert answer["message"] == {"role": "assistant", "content": "", "tool_calls": CALLS}
    assert answer["prompt_eval_count"] == 30 and codec.completion_tokens == 12
    ollama.ChatResponse.model_validate(answer)


def test_tool_call_without_index_and_with_empty_arguments() -> None:
    whole = [{"id": "c1", "type": "function", "function": {"name": "now", "arguments": ""}}]
    stream = chunk({"role": "assistant", "tool_calls": whole}) + chunk({}, "tool_calls") + b"data: [DONE]\n\n"
    _, _, out = run(stream)
    assert lines(out)[0]["message"]["tool_calls"] == [
        {"id": "c1", "function": {"index": 0, "name": "now", "arguments": {}}}
    ]


def test_truncated_tool_arguments_end_the_stream_with_one_error_line() -> None:
    opening = {"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": "b'}}
    stream = chunk({"tool_calls": [opening]}) + chunk({}, "length") + chunk(None, usage=usage(3, 4))
    codec, _, out = run(stream + b"data: [DONE]\n\n")
    assert lines(out) == [{"error": "the provider sent arguments for tool 'f' that are not a JSON object"}]
    assert codec.completion_tokens is None  # the usage chunk came after the failure; nothing more is read


def test_json_answer_to_a_streaming_client_and_missing_usage() -> None:
    whole = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}
        ]
    }
    codec, head, out = run(json.dumps(whole).encode(), headers=JSON_HEADERS)
    assert head == (200, b"application/x-ndjson")
    content, final = lines(out)
    assert content["message"]["content"] == "Hi there" and final["done"] is True
    assert "eval_count" not in final and "prompt_eval_count" not in final
    assert final["load_duration"] == 0 and final["eval_duration"] == final["total_duration"]
    assert (codec.prompt_tokens, codec.completion_tokens) == (None, None)


def test_non_stream_generate_golden() -> None:
    message = {"role": "assistant", "content": "Paris."}
    data = json.dumps(
        {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage(12, 2)}
    )
    _, _, out = run([data[:10].encode(), data[10:].encode()], chat=False, stream=False, headers=JSON_HEADERS)
    assert json.loads(out) == {
        "model": MODEL, "created_at": "2025-06-15T15:06:40.003Z", "response": "Paris.", "done": True,
        "done_reason": "stop", "total_duration": 3_000_000, "load_duration": 0, "prompt_eval_count": 12,
        "prompt_eval_duration": 0, "eval_count": 2, "eval_duration": 3_000_000,
    }  # fmt: skip


def test_provider_error_statuses_become_ollama_errors() -> None:
    body = json.dumps({"error": {"message": "The model `x` does not exist", "type": "invalid_request_error"}})
    _, head, out = run(body.encode(), status=404, headers=JSON_HEADERS)
    assert head == (404, b"application/json; charset=utf-8")
    assert json.loads(out) == {"error": "The model `x` does not exist"}
    _, head, out = run(b"<html>Bad Gateway</html>", status=502, headers=[(b"content-type", b"text/html")])
    assert head[0] == 502 and json.loads(out) == {"error": "the provider answered HTTP 502"}
    _, head, out = run(b'{"detail":[{"msg":"field required"}]}', status=422)
    assert head[0] == 400 and json.loads(out) == {"error": "field required"}
    _, head, out = run(b"upstream overloaded", status=529)
    assert head[0] == 502 and json.loads(out) == {"error": "upstream overloaded"}


def test_a_refused_credential_is_502_and_never_quoted() -> None:
    body = b'{"error":{"message":"Incorrect API key provided: sk-pro*****cret.","code":"invalid_api_key"}}'
    _, head, out = run(body, status=401, headers=JSON_HEADERS)
    assert head[0] == 502 and b"sk-pro" not in out
    assert json.loads(out) == {"error": "the provider refused the gateway's credential (HTTP 401)"}


def test_error_event_mid_stream_ends_with_one_error_line() -> None:
    stream = (
        chunk({"content": "Hi"})
        + event({"error": {"message": "overloaded", "code": 502}})
        + chunk({"content": "!"})
    )
    _, _, out = run(stream + b"data: [DONE]\n\n")
    assert lines(out)[1:] == [{"error": "overloaded"}]


def test_cut_mid_stream_gives_exactly_one_error_line_and_nothing_after() -> None:
    codec = GenerationCodec(MODEL, chat=True, stream=True, clock=ticking())
    codec.head(200, SSE_HEADERS)
    out = codec.feed(chunk({"content": "Hel"}) + chunk({"content": "lo"})[:30])
    out += codec.cut("backend connection lost")
    assert lines(out)[-1] == {"error": "backend connection lost"}
    assert [o.get("done") for o in lines(out)] == [False, None]
    assert codec.cut("again") == b"" and codec.end() == b"" and codec.feed(b"data: [DONE]\n\n") == b""


def test_cut_after_the_final_object_adds_nothing() -> None:
    codec = GenerationCodec(MODEL, chat=True, stream=True, clock=ticking())
    codec.head(200, SSE_HEADERS)
    out = codec.feed(text_stream(["a"]))
    assert lines(out)[-1]["done"] is True
    assert codec.cut("late") == b""


def test_stream_that_ends_without_finish_is_an_error_but_done_without_finish_is_complete() -> None:
    _, _, out = run(chunk({"content": "Hel"}))
    assert lines(out)[-1] == {"error": INCOMPLETE}
    _, _, out = run(chunk({"content": "Hel"}) + b"data: [DONE]\n\n")
    assert lines(out)[-1]["done_reason"] == "stop"
    _, _, out = run(chunk({"content": "Hel"}) + chunk({}, "stop"))  # finished, but no [DONE]
    assert lines(out)[-1]["done"] is True


def test_garbage_is_an_error_never_a_traceback() -> None:
    _, _, out = run(b"data: {not json\n\n")
    assert lines(out) == [{"error": "the provider sent an event that is not JSON"}]
    _, _, out = run(b"data: [1, 2]\n\n")
    assert lines(out) == [{"error": "the provider sent an event that is not a JSON object"}]
    _, _, out = run(b"<html>", stream=False, headers=JSON_HEADERS)
    assert json.loads(out) == {"error": "the provider's answer is not JSON"}
    _, _, out = run(b'{"message": "quota exceeded"}', stream=False, headers=JSON_HEADERS)
    assert json.loads(out) == {"error": "quota exceeded"}


def test_keep_alive_comments_and_n_greater_than_one_are_ignored() -> None:
    two = event(
        {"choices": [{"index": 0, "delta": {"content": "A"}}, {"index": 1, "delta": {"content": "B"}}]}
    )
    _, _, out = run(b": ping\n\n" + two + b": ping\n\n" + chunk({}, "stop") + b"data: [DONE]\n\n")
    assert [o["message"]["content"] for o in lines(out)] == ["A", ""]


def spaced(stream: bytes) -> bytes:
    """The same events with spaces after separators: no fast path, every event decoded."""
    return b"".join(
        event(json.loads(e[6:]), spaced=True) if e.startswith(b"data: {") else e + b"\n\n"
        for e in stream.split(b"\n\n")[:-1]
    )


TEXT = text_stream(["Hello", ", ", 'w\u00f6rld "quoted" \\', "!\n", "\u2028\t"])
STREAMS = [TEXT, spaced(TEXT), tool_stream(), text_stream(["x"]).replace(b"\n", b"\r\n")]


def test_events_decoded_or_copied_give_the_same_lines() -> None:
    """Compact content chunks are copied as JSON text; spaced ones are decoded: same Ollama lines."""
    assert run(TEXT)[2] == run(spaced(TEXT))[2]
    said = [o["message"]["content"] for o in lines(run(TEXT)[2])][:-1]
    assert said == ["Hello", ", ", 'wörld "quoted" \\', "!\n", "\u2028\t"]


def test_lines_from_one_read_share_their_stamp() -> None:
    stamps = {o["created_at"] for o in lines(run(TEXT)[2])[:-1]}
    assert len(stamps) == 1


@settings(max_examples=200)
@given(
    st.sampled_from(STREAMS), st.lists(st.integers(min_value=0, max_value=4000), max_size=40), st.booleans()
)
def test_any_resplitting_of_the_provider_stream_gives_the_same_ndjson(stream: bytes, cuts: list[int],
                                                                      chat: bool) -> None:  # fmt: skip
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    # A stopped clock: stamps and durations depend on how often it is read, content must not.
    assert run(pieces, chat=chat, step=0)[2] == run(stream, chat=chat, step=0)[2]


def _three_reads(stream: bytes) -> list[bytes]:
    """The role chunk and first text, the texts between, then the finish, usage and [DONE] events."""
    events = events_of(stream)
    return [b"".join(events[:2]), b"".join(events[2:-3]), b"".join(events[-3:])]


@settings(max_examples=300, deadline=None)  # timing says nothing here; the machine is shared
@given(st.lists(st.text(min_size=1, max_size=12), min_size=6, max_size=30))
def test_a_read_of_text_events_only_gives_what_event_by_event_gives(texts: list[str]) -> None:
    stream = text_stream(texts)
    whole = run(_three_reads(stream), step=0)[2]
    assert whole == run(events_of(stream), step=0)[2]
    assert [o["message"]["content"] for o in lines(whole)[:-1]] == texts


def test_runs_of_text_events_are_turned_in_one_go_and_anything_else_is_left_alone() -> None:
    codec = GenerationCodec(MODEL, chat=True, stream=True, clock=ticking())
    codec.head(200, SSE_HEADERS)
    first, middle, _ = _three_reads(text_stream(["a", "b", "c", "d", "e", "f"]))
    codec.feed(first)  # learns the stream's prefix and tail
    out: list[bytes] = []
    assert codec._run(middle, out) and [o["message"]["content"] for o in lines(b"".join(out))] == list(
        "bcdef"
    )
    for texts in (['say "hi"', "x", "y", "z"], ["\u00e9\u2028", "\n", "\t", "\u0001"]):
        quoted = _three_reads(text_stream(["a", *texts, "f"]))[1]
        assert codec._run(quoted, out)  # escapes are copied as they are
    for texts in (["C:\\dir", "x", "y", "z"], ["ends \\", "x", "y", "z"]):
        assert not codec._run(_three_reads(text_stream(["a", *texts, "f"]))[1], out)  # escaped backslashes
    finish = chunk({}, "stop", usage=None)
    assert not codec._run(middle + finish, out) and not codec._run(finish + middle, out)
    assert not codec._run(middle.replace(b'"usage":null}', b'"usage":null,"x":1}', 1), out)
