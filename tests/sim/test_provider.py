"""The simulator as an OpenAI-compatible provider (`--provider --api-key`), driven by the official clients."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import Sim
from tests.sim.conftest import launch
from tests.translate.conftest import CITY, PNG, WEATHER

KEY = "sk-sim-provider-0123456789"
HI = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    flags = (
        "--provider",
        "--api-key",
        KEY,
        "--models",
        "gpt-4o-mini,text-embedding-3-small",
        "--journal-bodies",
    )
    running = launch(tmp_path_factory.mktemp("provider"), *flags, "--base-path", "/compatible-mode/v1")
    yield running
    running.stop()


@pytest.fixture
def client(provider: Sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{provider.url}/v1", api_key=KEY, max_retries=0)


def test_credential_is_required_in_openais_shape(provider: Sim) -> None:
    missing = httpx.get(f"{provider.url}/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "invalid_request_error"
    assert missing.json()["error"]["message"].startswith("You didn't provide an API key")
    with pytest.raises(openai.AuthenticationError) as wrong:
        openai.OpenAI(
            base_url=f"{provider.url}/v1", api_key="sk-wrong-key-987654", max_retries=0
        ).models.list()
    assert wrong.value.code == "invalid_api_key" and "sk-" + "*" * 12 + "7654" in wrong.value.message


def test_models_are_bare_ids(client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == ["gpt-4o-mini", "text-embedding-3-small"]
    assert client.models.retrieve("gpt-4o-mini").owned_by == "fortress-sim"


def test_journal_records_model_credential_and_body(provider: Sim, client: openai.OpenAI) -> None:
    provider.clear()
    client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=2)
    (entry,) = provider.requests()
    headers = {name.lower(): value for name, value in entry["headers"]}
    assert entry["model"] == "gpt-4o-mini" and headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(entry["body"])["max_tokens"] == 2


def test_stream_with_usage_as_openai_sends_it(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HI,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=5,
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "The quick brown fox jumps"
    assert chunks[-2].choices[0].finish_reason == "length"
    last = chunks[-1]
    assert last.choices == [] and last.usage and last.usage.completion_tokens == 5
    assert last.usage.prompt_tokens_details and last.usage.prompt_tokens_details.cached_tokens == 0


def test_stream_without_usage_has_no_usage_anywhere(provider: Sim) -> None:
    body = {"model": "gpt-4o-mini", "messages": HI, "stream": True}
    reply = httpx.post(
        f"{provider.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert b'"usage"' not in reply.content and reply.content.endswith(b"data: [DONE]\n\n")


def test_streamed_tool_call_arrives_in_fragments_and_assembles(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER], stream=True
    )
    fragments = [c.choices[0].delta.tool_calls for c in stream if c.choices and c.choices[0].delta.tool_calls]
    assert len(fragments) > 3 and fragments[0][0].id and fragments[0][0].function.name == "get_weather"
    assert all(f[0].id is None for f in fragments[1:])
    arguments = "".join(f[0].function.arguments or "" for f in fragments)
    assert json.loads(arguments) == CITY
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER]
    ) as helper:
        final = helper.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == CITY


def test_tool_round_trip_and_openais_pairing_rules(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER]
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    assert first.choices[0].message.content is None and first.usage and first.usage.completion_tokens > 0
    assistant = {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]}
    answered = [{"role": "user", "content": "Weather?"}, assistant,
                {"role": "tool", "tool_call_id": call.id, "content": "21 C"}]  # fmt: skip
    final = client.chat.completions.create(model="gpt-4o-mini", messages=answered, tools=[WEATHER])
    assert final.choices[0].message.content and final.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError, match="must be a response to a preceeding message"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[*answered[:2], {**answered[2], "tool_call_id": "call_unknown"}]
        )
    with pytest.raises(openai.BadRequestError, match="did not have response messages"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[*answered[:2], HI[0]])


def test_parallel_calls_and_a_tool_call_cut_by_max_tokens(client: openai.OpenAI) -> None:
    search = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    both = client.chat.completions.create(model="gpt-4o-mini", messages=HI, tools=[WEATHER, search])
    assert [c.function.name for c in both.choices[0].message.tool_calls or []] == ["get_weather", "search"]
    one = client.chat.completions.create(model="gpt-4o-mini", messages=HI, tools=[WEATHER, search],
                                         parallel_tool_calls=False)  # fmt: skip
    assert len(one.choices[0].message.tool_calls or []) == 1
    cut = client.chat.completions.create(model="gpt-4o-mini", messages=HI, tools=[WEATHER], max_tokens=2)
    assert cut.choices[0].finish_reason == "length" and cut.usage and cut.usage.completion_tokens == 2
    arguments = (cut.choices[0].message.tool_calls or [])[0].function.arguments
    with pytest.raises(json.JSONDecodeError):
        json.loads(arguments)


def test_images_as_data_urls_and_http_urls(client: openai.OpenAI) -> None:
    def ask(url: str) -> openai.types.chat.ChatCompletion:
        parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
        return client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": parts}]
        )

    with_image = ask(f"data:image/png;base64,{PNG}")
    plain = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is this?"}]
    )
    assert (
        with_image.usage and plain.usage and with_image.usage.prompt_tokens == plain.usage.prompt_tokens + 85
    )
    assert ask("https://example.com/cat.png").choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="base64 data URL"):
        ask(f"data:application/octet-stream;base64,{PNG}")
    with pytest.raises(openai.BadRequestError, match="unsupported image"):
        ask("data:image/png;base64,not*base64")


def test_response_format_is_honoured(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}  # fmt: skip
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=HI,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    assert json.loads(reply.choices[0].message.content or "") == {"name": CITY["city"], "age": 42}
    plain = client.chat.completions.create(
        model="gpt-4o-mini", messages=HI, response_format={"type": "json_object"}
    )
    assert json.loads(plain.choices[0].message.content or "")["answer"].startswith("The quick")


def test_completions_and_embeddings(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="gpt-4o-mini", prompt="Once", max_tokens=3, stream=True,
                                            stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "The quick brown"
    assert (
        all(c.usage is None for c in chunks[:-1])
        and chunks[-1].usage
        and chunks[-1].usage.completion_tokens == 3
    )
    vectors = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens == 2


def test_unknown_model_in_openais_words(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist or you do not have access"):
        client.chat.completions.create(model="gpt-9", messages=HI)


def test_base_path_serves_the_same_api(provider: Sim) -> None:
    moved = openai.OpenAI(base_url=f"{provider.url}/compatible-mode/v1", api_key=KEY, max_retries=0)
    assert (
        moved.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=1)
        .choices[0]
        .message.content
    )
    assert httpx.get(f"{provider.url}/compatible-mode/v2/models").status_code == 404


def test_ollama_flavour_sends_tool_calls_whole(simulator: Sim) -> None:
    """Without --provider, /v1 imitates Ollama: each call in one delta, arguments complete."""
    body = {"model": "llama3.2", "messages": HI, "tools": [WEATHER], "stream": True}
    events = httpx.post(f"{simulator.url}/v1/chat/completions", json=body).text.split("\n\n")
    deltas = [json.loads(e[6:])["choices"][0]["delta"] for e in events if e.startswith("data: {")]
    (call,) = deltas[0]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == CITY and call["id"].startswith("call_")


@pytest.fixture
def anthropic_client(provider: Sim):  # the anthropic package is optional: no type to name here
    anthropic = pytest.importorskip("anthropic")
    return anthropic.Anthropic(base_url=provider.url, api_key=KEY, max_retries=0)


def test_anthropic_messages_with_the_official_client(anthropic_client) -> None:
    reply = anthropic_client.messages.create(model="gpt-4o-mini", max_tokens=4, messages=HI)
    assert reply.id.startswith("msg_") and reply.stop_reason == "max_tokens"
    assert reply.content[0].text == "The quick brown fox" and reply.usage.output_tokens == 4
    with anthropic_client.messages.stream(model="gpt-4o-mini", max_tokens=100, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert (
        text.startswith("The quick") and final.stop_reason == "end_turn" and final.usage.output_tokens == 12
    )
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}
    called = anthropic_client.messages.create(model="gpt-4o-mini", max_tokens=100, messages=HI, tools=[tool])
    assert called.stop_reason == "tool_use" and called.content[0].input == CITY
    with anthropic_client.messages.stream(
        model="gpt-4o-mini", max_tokens=100, messages=HI, tools=[tool]
    ) as stream:
        assert stream.get_final_message().content[0].input == CITY


def test_anthropic_errors_in_anthropics_shape(provider: Sim) -> None:
    url = f"{provider.url}/v1/messages"
    refused = httpx.post(url, json={"model": "gpt-4o-mini", "max_tokens": 5, "messages": HI})
    assert refused.status_code == 401
    assert refused.json()["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    missing = httpx.post(url, json={"model": "gpt-4o-mini", "messages": HI}, headers={"x-api-key": KEY})
    assert missing.status_code == 400 and missing.json()["type"] == "error"
    assert missing.json()["error"]["message"] == "max_tokens is required and must be positive"
    unknown = httpx.post(
        url, json={"model": "nope", "max_tokens": 5, "messages": HI}, headers={"x-api-key": KEY}
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
