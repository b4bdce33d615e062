"""Ollama request bodies for `P/M` rewritten as the provider's OpenAI requests (golden shapes)."""

from __future__ import annotations

import base64
import json

import ollama
import pytest

from fortress.translate import TranslationError, translate
from fortress.translate.media import sniff
from tests.translate.conftest import START_NS, ticking

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 24).decode()
GIF = base64.b64encode(b"GIF89a" + b"\x00" * 24).decode()
WEBP = base64.b64encode(b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 24).decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def sent(path: str, body: dict) -> dict:
    translation = translate(path, body, "prov", "gpt-4o-mini")
    assert translation.model == "prov/gpt-4o-mini" and not translation.local
    return json.loads(translation.body)


def test_chat_golden() -> None:
    body = {
        "model": "prov/gpt-4o-mini",
        "messages": [{"role": "System", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "options": {"temperature": 0.2, "top_p": 0.9, "num_predict": 64, "stop": ["\n\n"], "seed": 7},
        "keep_alive": "5m",
    }
    translation = translate("/api/chat", body, "prov", "gpt-4o-mini")
    assert translation.path == "/chat/completions" and translation.stream
    assert json.loads(translation.body) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["\n\n"],
        "max_tokens": 64,
    }


def test_stream_false_asks_no_stream_options() -> None:
    request = sent("/api/chat", {"messages": [{"role": "user", "content": "x"}], "stream": False})
    assert request["stream"] is False and "stream_options" not in request


def test_options_without_an_openai_twin_are_dropped() -> None:
    options = {
        "num_ctx": 100000,
        "top_k": 5,
        "min_p": 0.1,
        "repeat_penalty": 1.2,
        "num_gpu": 9,
        "num_predict": -1,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.25,
    }
    request = sent("/api/chat", {"messages": [{"role": "user", "content": "x"}], "options": options})
    dropped = {"num_ctx", "top_k", "min_p", "repeat_penalty", "num_gpu", "num_predict", "max_tokens"}
    assert not dropped & set(request)
    assert request["frequency_penalty"] == 0.5 and request["presence_penalty"] == 0.25


@pytest.mark.parametrize(
    ("image", "mime"), [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")]
)
def test_images_become_data_url_parts_typed_from_their_bytes(image: str, mime: str) -> None:
    request = sent(
        "/api/chat", {"messages": [{"role": "user", "content": "What is this?", "images": [image]}]}
    )
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{image}"}},
    ]


def test_image_without_text_and_wrapped_base64() -> None:
    wrapped = PNG[:20] + "\n" + PNG[20:]
    request = sent("/api/chat", {"messages": [{"role": "user", "images": [wrapped]}]})
    assert request["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    ]


def test_unknown_image_bytes_are_called_png() -> None:
    assert sniff(b"\x00\x01\x02") == "image/png"


@pytest.mark.parametrize("image", ["not base64!", "abc", 42, ""])
def test_bad_images_are_refused_with_400(image: object) -> None:
    with pytest.raises(TranslationError) as caught:
        translate("/api/chat", {"messages": [{"role": "user", "images": [image]}]}, "p", "m")
    assert caught.value.status == 400 and "image 0" in caught.value.message


def test_tools_and_a_whole_tool_round_trip() -> None:
    """Ollama clients send tool results with only `tool_name`: ids are paired in call order."""
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {
                    "id": "call_given",
                    "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Rome"}},
                },
            ],
        },
        {"role": "tool", "content": "11 C", "tool_name": "get_weather"},
        {"role": "tool", "content": "19 C", "tool_name": "get_weather"},
    ]
    request = sent("/api/chat", {"messages": messages, "tools": [WEATHER]})
    assert request["tools"] == [WEATHER]
    assistant, first, second = request["messages"][1:]
    paris = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    rome = {"name": "get_weather", "arguments": '{"city": "Rome"}'}
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1_0", "type": "function", "function": paris},
            {"id": "call_given", "type": "function", "function": rome},
        ],
    }
    assert first == {"role": "tool", "content": "11 C", "tool_call_id": "call_1_0"}
    assert second == {"role": "tool", "content": "19 C", "tool_call_id": "call_given"}


def test_tool_results_by_id_and_by_name_out_of_order() -> None:
    calls = [
        {"id": "a", "function": {"name": "f", "arguments": {}}},
        {"id": "b", "function": {"name": "g", "arguments": {}}},
    ]
    messages = [
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "content": "g says", "tool_name": "g"},
        {"role": "tool", "content": "f says", "tool_call_id": "a"},
    ]
    request = sent("/api/chat", {"messages": messages})
    assert [m.get("tool_call_id") for m in request["messages"]] == [None, "b", "a"]


def test_empty_tools_list_is_omitted() -> None:
    """The ollama client always sends `tools: []`; OpenAI refuses an empty list."""
    assert "tools" not in sent("/api/chat", {"messages": [{"role": "user", "content": "x"}], "tools": []})


def test_format_json_and_schema() -> None:
    base = {"messages": [{"role": "user", "content": "x"}]}
    assert sent("/api/chat", {**base, "format": "json"})["response_format"] == {"type": "json_object"}
    schema = {"title": "City report!", "type": "object", "properties": {"name": {"type": "string"}}}
    assert sent("/api/chat", {**base, "format": schema})["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "City_report_", "schema": schema},
    }
    assert sent("/api/chat", {**base, "format": {"type": "object"}})["response_format"]["json_schema"][
        "name"
    ] == ("response")
    with pytest.raises(TranslationError, match="invalid format"):
        translate("/api/chat", {**base, "format": "yaml"}, "p", "m")


def test_think_levels_map_to_reasoning_effort() -> None:
    base = {"messages": [{"role": "user", "content": "x"}]}
    assert sent("/api/chat", {**base, "think": "max"})["reasoning_effort"] == "high"
    assert sent("/api/chat", {**base, "think": "low"})["reasoning_effort"] == "low"
    assert "reasoning_effort" not in sent("/api/chat", {**base, "think": True})
    with pytest.raises(TranslationError, match="invalid think value"):
        translate("/api/chat", {**base, "think": "extreme"}, "p", "m")


def test_generate_goes_to_chat_with_system_and_images() -> None:
    body = {
        "prompt": "Describe",
        "system": "You are terse.",
        "images": [JPEG],
        "format": "json",
        "stream": False,
    }
    translation = translate("/api/generate", body, "prov", "gpt-4o-mini")
    assert translation.path == "/chat/completions" and not translation.stream
    request = json.loads(translation.body)
    assert request["messages"] == [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
            ],
        },
    ]
    assert request["response_format"] == {"type": "json_object"} and request["stream"] is False


def test_raw_and_suffix_generate_go_to_completions() -> None:
    body = {"prompt": "def f(", "suffix": "    return x", "options": {"num_predict": 9}}
    translation = translate("/api/generate", body, "prov", "coder")
    assert translation.path == "/completions"
    assert json.loads(translation.body) == {
        "model": "coder",
        "prompt": "def f(",
        "suffix": "    return x",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 9,
    }
    raw = translate("/api/generate", {"prompt": "[INST]x[/INST]", "raw": True}, "prov", "coder")
    assert raw.path == "/completions" and json.loads(raw.body)["prompt"] == "[INST]x[/INST]"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "x", "raw": True, "system": "s"}, "raw mode does not support"),
        ({"prompt": "x", "raw": True, "images": [PNG]}, "images need the chat API"),
        ({"prompt": 5}, "prompt must be a string"),
    ],
)
def test_generate_refusals(body: dict, message: str) -> None:
    with pytest.raises(TranslationError, match=message) as caught:
        translate("/api/generate", body, "p", "m")
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/chat", {"messages": "hi"}, "messages must be a list"),
        ("/api/chat", {"messages": ["hi"]}, "message 0 must be an object"),
        ("/api/chat", {"messages": [{"content": "x"}]}, "role must be a string"),
        ("/api/chat", {"messages": [{"role": "user", "content": ["x"]}]}, "content must be a string"),
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "x"}]},
            "tool definition",
        ),
        ("/api/chat", {"messages": [{"role": "assistant", "tool_calls": [{}]}]}, "invalid tool call"),
        ("/api/chat", {"messages": [{"role": "user", "content": "x"}], "options": [1]}, "options must be"),
        ("/api/embed", {"input": [1, 2]}, "invalid input type"),
        ("/api/embed", {"input": {"a": 1}}, "invalid input type"),
    ],
)
def test_wrong_types_are_400_never_a_crash(path: str, body: dict, message: str) -> None:
    with pytest.raises(TranslationError, match=message) as caught:
        translate(path, body, "p", "m")
    assert caught.value.status == 400


def test_unknown_route_and_non_object_body() -> None:
    with pytest.raises(TranslationError) as caught:
        translate("/api/pull", {}, "p", "m")
    assert caught.value.status == 404
    with pytest.raises(TranslationError, match="JSON object"):
        translate("/api/chat", [], "p", "m")  # type: ignore[arg-type]


def test_embed_and_legacy_embeddings() -> None:
    embed = translate(
        "/api/embed", {"input": ["a", "b"], "dimensions": 256, "truncate": False}, "prov", "emb"
    )
    assert (embed.path, embed.stream) == ("/embeddings", False)
    assert json.loads(embed.body) == {
        "model": "emb",
        "input": ["a", "b"],
        "encoding_format": "float",
        "dimensions": 256,
    }
    legacy = translate("/api/embeddings", {"prompt": "hello"}, "prov", "emb")
    assert json.loads(legacy.body) == {"model": "emb", "input": "hello", "encoding_format": "float"}


def test_requests_that_run_no_model_are_answered_locally_in_ollamas_shapes() -> None:
    clock = ticking()
    load = translate("/api/generate", {"model": "p/m"}, "p", "m")
    assert (load.local, load.path, load.body) == ("load", "", b"")
    reply = json.loads(load.local_reply(clock))
    assert reply == {
        "model": "p/m",
        "created_at": "2025-06-15T15:06:40Z",
        "response": "",
        "done": True,
        "done_reason": "load",
    }
    ollama.GenerateResponse.model_validate(reply)
    unload = translate("/api/chat", {"messages": [], "keep_alive": 0}, "p", "m")
    chat = ollama.ChatResponse.model_validate_json(unload.local_reply(ticking(start=START_NS + 5)))
    assert (
        chat.done_reason == "unload"
        and chat.message.content == ""
        and chat.created_at.endswith(".000000005Z")
    )
    empty = translate("/api/embed", {"input": []}, "p", "m")
    assert ollama.EmbedResponse.model_validate_json(empty.local_reply(clock)).embeddings == []
    assert translate("/api/embeddings", {"prompt": ""}, "p", "m").local_reply(clock) == b'{"embedding":[]}'
