"""The OpenAI and Anthropic APIs through Fortress (issue 10, issue 9 §4, DESIGN §6.3) with the official
`openai` and `anthropic` clients: provider models answer as P/M with exact usage, the aliases without
`/v1` behave as their `/v1` routes, streamed `/v1` chat to Ollama is charged to the key's token budget
while the client sees what Ollama itself sends, and `/v1/messages` reaches Ollama under the same policy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Sim
from tests.proxy.providers import CHAT_MODEL, EMBED_MODEL, Stack, provider_block, running

CHAT = f"prov/{CHAT_MODEL}"
EMBED = f"prov/{EMBED_MODEL}"
HI = [{"role": "user", "content": "hi"}]
ROW = "model, backend, status, stream, prompt_eval_count, eval_count"  # the usage columns checked
_VARYING = re.compile(rb'"(id|created)":("[^"]*"|\d+)')  # differ from one answer to the next


def tables(provider: Sim) -> str:
    return provider_block("prov", f"{provider.url}/v1", [CHAT_MODEL, EMBED_MODEL])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running(tmp_path_factory.mktemp("providers-v1"), tables) as s:
        yield s


def rid(request_id: str) -> dict[str, str]:
    """An X-Request-ID Fortress keeps, so the request's usage row can be found."""
    return {"X-Request-ID": request_id}


def oai(stack: Stack, base: str = "/v1", key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.fortress.url + base, api_key=key or stack.key, max_retries=0)


def test_openai_client_on_a_provider_model_sees_p_m_and_the_provider_s_usage(stack: Stack) -> None:
    c = oai(stack)
    done = c.chat.completions.create(model=CHAT, messages=HI)
    assert done.model == CHAT and done.usage is not None and done.usage.completion_tokens == 12
    stack.clear()
    chunks = list(
        c.chat.completions.create(model=CHAT, messages=HI, stream=True, extra_headers=rid("v1-hidden"))
    )
    assert {ch.model for ch in chunks} == {CHAT} and all(ch.usage is None for ch in chunks)
    assert all(ch.choices for ch in chunks)  # the usage chunk Fortress asked for is not shown
    (seen,) = stack.seen()
    assert (
        json.loads(seen["body"])["stream_options"] == {"include_usage": True} and seen["model"] == CHAT_MODEL
    )
    row = stack.fortress.usage({"v1-hidden"}, ROW)["v1-hidden"]
    assert row == (CHAT, "prov", 200, 1, done.usage.prompt_tokens, 12)
    asked = list(
        c.chat.completions.create(
            model=CHAT, messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 12 and not asked[-1].choices
    embedded = c.embeddings.create(model=EMBED, input=["a", "b"])
    assert embedded.model == EMBED and len(embedded.data) == 2 and embedded.usage.prompt_tokens == 2
    text = c.completions.create(model=CHAT, prompt="Say", max_tokens=3)
    assert text.model == CHAT and text.usage is not None and text.usage.completion_tokens == 3


def test_aliases_without_v1_behave_as_their_v1_routes(stack: Stack) -> None:
    alias, v1 = oai(stack, ""), oai(stack)
    assert [m.id for m in alias.models.list()] == [m.id for m in v1.models.list()]
    assert alias.models.retrieve(CHAT).owned_by == "prov"
    stack.clear()
    local = alias.chat.completions.create(model="llama3.2", messages=HI, extra_headers=rid("alias-local"))
    assert local.choices[0].message.content and local.model == "llama3.2"
    streamed = list(alias.completions.create(model="llama3.2", prompt="Say", stream=True))
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices)
    assert len(alias.embeddings.create(model="nomic-embed-text", input="x").data[0].embedding) > 8
    assert [r["path"] for r in stack.seen(stack.local)] == [
        "/v1/chat/completions",  # Ollama serves the /v1 paths only: the alias is mapped
        "/v1/completions",
        "/v1/embeddings",
    ]
    assert (
        alias.chat.completions.create(model=CHAT, messages=HI, extra_headers=rid("alias-prov")).model == CHAT
    )
    assert [r["path"] for r in stack.seen()] == ["/v1/chat/completions"]
    with pytest.raises(openai.AuthenticationError) as bad:
        oai(stack, "", "fk_nothere1_" + "x" * 40).models.list()
    assert isinstance(bad.value.body, dict) and bad.value.body["type"] == "authentication_error"
    rows = stack.fortress.usage({"alias-local", "alias-prov"}, "path, backend, status, eval_count")
    assert rows["alias-local"][:3] == ("/chat/completions", "local", 200) and rows["alias-local"][3]
    assert rows["alias-prov"] == ("/chat/completions", "prov", 200, 12)


def _normal(body: bytes) -> bytes:
    return _VARYING.sub(rb'"\1":0', body)


def test_streamed_v1_chat_to_ollama_is_charged_and_looks_as_ollama_sends_it(stack: Stack) -> None:
    key = stack.fortress.key("budget", "--tokens", "10/1h")
    tokens = {"X-Sim-Tokens": "6"}
    direct = openai.OpenAI(base_url=f"{stack.local.url}/v1", api_key="x", max_retries=0)
    want = list(
        direct.chat.completions.create(model="llama3.2", messages=HI, stream=True, extra_headers=tokens)
    )
    c = oai(stack, key=key)
    named = {**tokens, **rid("budget-stream")}
    got = list(c.chat.completions.create(model="llama3.2", messages=HI, stream=True, extra_headers=named))

    def seen(chunks: list) -> list[dict]:
        return [ch.model_dump(exclude={"id", "created"}) for ch in chunks]

    assert seen(got) == seen(want) and len(got) == 7 and all(ch.usage is None for ch in got)
    row = stack.fortress.usage({"budget-stream"}, ROW)["budget-stream"]
    assert row[:5] == ("llama3.2", "local", 200, 1, row[4]) and row[4] > 0 and row[5] == 6
    with pytest.raises(openai.RateLimitError, match="token limit exceeded"):  # the budget was charged
        c.chat.completions.create(model="llama3.2", messages=HI, stream=True)
    # byte for byte, once the per-answer id and time stamp are set aside
    body = {"model": "llama3.2", "messages": HI, "stream": True}
    raw = httpx.post(f"{stack.local.url}/v1/chat/completions", json=body, headers=tokens).content
    through = httpx.post(
        f"{stack.fortress.url}/v1/chat/completions", json=body, headers={**tokens, **stack.auth}
    ).content
    assert _normal(through) == _normal(raw) and b'"usage"' not in through


def test_a_client_asking_for_usage_itself_gets_ollama_s_stream_as_it_is(stack: Stack) -> None:
    body = {"model": "llama3.2", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    raw = httpx.post(f"{stack.local.url}/v1/chat/completions", json=body).content
    through = httpx.post(f"{stack.fortress.url}/v1/chat/completions", json=body, headers=stack.auth).content
    assert _normal(through) == _normal(raw) and b'"usage":{"prompt_tokens"' in through


def ant(stack: Stack, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.fortress.url, api_key=key or stack.key, max_retries=0)


def test_anthropic_messages_reach_ollama_with_usage_stream_and_not(stack: Stack) -> None:
    c = ant(stack)  # the key goes in x-api-key, as Anthropic's clients send it
    stack.clear()
    whole = c.messages.create(model="llama3.2", max_tokens=5, messages=HI, extra_headers=rid("ant-whole"))
    assert whole.content[0].type == "text" and whole.stop_reason == "max_tokens"
    with c.messages.stream(
        model="llama3.2", max_tokens=7, messages=HI, extra_headers=rid("ant-stream")
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == 7 and final.content[0].text
    sent = stack.seen(stack.local)
    assert [r["path"] for r in sent] == ["/v1/messages"] * 2
    assert stack.key not in json.dumps(sent)  # x-api-key is the client's: never forwarded
    rows = stack.fortress.usage({"ant-whole", "ant-stream"}, "stream, prompt_eval_count, eval_count")
    assert rows == {
        "ant-whole": (0, whole.usage.input_tokens, 5),
        "ant-stream": (1, final.usage.input_tokens, 7),
    }


def test_anthropic_messages_under_the_key_s_policy_with_anthropic_s_errors(stack: Stack) -> None:
    with pytest.raises(anthropic.AuthenticationError) as bad:
        ant(stack, "fk_nothere1_" + "x" * 40).messages.create(model="llama3.2", max_tokens=5, messages=HI)
    assert bad.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    narrow = ant(stack, stack.fortress.key("carol", "--models", "llama3.2"))
    with pytest.raises(anthropic.PermissionDeniedError) as forbidden:
        narrow.messages.create(model="qwen2.5:0.5b", max_tokens=5, messages=HI)
    assert (
        isinstance(forbidden.value.body, dict) and forbidden.value.body["error"]["type"] == "permission_error"
    )
    with pytest.raises(anthropic.NotFoundError):
        ant(stack).messages.create(model="no-such-model", max_tokens=5, messages=HI)
    with pytest.raises(anthropic.BadRequestError, match="provider prov"):
        ant(stack).messages.create(model=CHAT, max_tokens=5, messages=HI)
    stack.clear()
    twice = b'{"model":"llama3.2","Model":"qwen2.5:0.5b","max_tokens":5,"messages":[]}'  # Go reads the last
    recased = httpx.post(f"{stack.fortress.url}/v1/messages", content=twice, headers=stack.auth)
    assert recased.status_code == 400 and recased.json()["type"] == "error" and stack.seen(stack.local) == []
    capped = ant(stack, stack.fortress.key("dave", "--max-num-predict", "3"))
    assert capped.messages.create(model="llama3.2", max_tokens=50, messages=HI).usage.output_tokens == 3


def test_an_anthropic_stream_cut_mid_way_ends_with_an_error_event(stack: Stack) -> None:
    headers = {"X-Sim-Die-After": "4"}
    with (
        pytest.raises(anthropic.APIStatusError) as cut,
        ant(stack).messages.stream(
            model="llama3.2", max_tokens=20, messages=HI, extra_headers=headers
        ) as stream,
    ):
        stream.get_final_message()
    assert "backend local" in str(cut.value.body)
    body = {"model": "llama3.2", "max_tokens": 20, "messages": HI, "stream": True}
    raw = httpx.post(f"{stack.fortress.url}/v1/messages", json=body, headers={**headers, **stack.auth}).text
    events = [e for e in raw.split("\n\n") if e]
    assert (
        events[-1].startswith("event: error\ndata: ")
        and sum(e.startswith("event: error") for e in events) == 1
    )
    assert json.loads(events[-1].split("data: ", 1)[1])["error"]["type"] == "api_error"


def test_responses_api_on_a_provider_model_names_it_p_m_like_chat(stack: Stack) -> None:
    """/v1/responses for P/M: the provider gets its own model name, the client sees P/M in the answer and in
    every streamed event that names a model, and the usage row carries the provider's counts."""
    c = oai(stack)
    stack.clear()
    whole = c.responses.create(model=CHAT, input="hi", extra_headers=rid("resp-whole"))
    assert whole.model == CHAT and whole.output_text and whole.usage is not None
    assert whole.usage.output_tokens == 12
    events = list(c.responses.create(model=CHAT, input="hi", stream=True, extra_headers=rid("resp-stream")))
    named = [e.response.model for e in events if hasattr(e, "response")]
    assert named == [CHAT, CHAT] and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    assert [json.loads(s["body"])["model"] for s in stack.seen()] == [CHAT_MODEL, CHAT_MODEL]
    rows = stack.fortress.usage({"resp-whole", "resp-stream"}, ROW)
    prompt = whole.usage.input_tokens
    assert rows == {
        "resp-whole": (CHAT, "prov", 200, 0, prompt, 12),
        "resp-stream": (CHAT, "prov", 200, 1, prompt, 12),
    }
