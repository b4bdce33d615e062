"""The body stage's "auto" step without sockets: the Gate with a real AutoChooser over a real inventory."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fortress.config import Config, RoutingConfig
from fortress.http.replies import LocalReply
from fortress.pipeline import routes
from fortress.pipeline.chain import Admit, Compiled, Forward, Gate
from fortress.routing.auto import AutoChooser, CandidateCache
from fortress.routing.capabilities import Capabilities, CapabilityStore
from fortress.routing.inventory import Inventory
from fortress.state.snapshot import KeyRecord, Policy, Snapshot

IMG = "iVBORw0KGgo="
CATALOG = {  # name -> (capabilities, size)
    "llava:7b": ({"completion", "vision"}, 4700),
    "qwen2.5:0.5b": ({"completion", "tools"}, 400),
    "llama3.2:latest": ({"completion", "tools"}, 2000),
    "deepseek-r1:7b": ({"completion", "thinking"}, 4500),
    "nomic-embed-text:latest": ({"embedding"}, 270),
}


class World:
    """A gate whose auto step sees one backend holding CATALOG, every model learnt."""

    def __init__(self, *keys: KeyRecord, auto_models: tuple[str, ...] = ()) -> None:
        self.inventory = Inventory()
        self.store = CapabilityStore()
        self.inventory.set_tags(
            "a",
            {"models": [{"name": n, "digest": f"d-{n}", "size": s} for n, (_, s) in CATALOG.items()]},
            now=1,
        )
        for name, (caps, _) in CATALOG.items():
            self.store.learnt(f"d-{name}", Capabilities(frozenset(caps)))
        self.chooser = AutoChooser(CandidateCache(self.inventory, self.store), lambda: frozenset({"a"}))
        self.keys = {k.id: k for k in keys}
        self.gate = Gate(self._compiled(auto_models), auto=self.chooser)
        self.chooser.configure(auto_models)

    def _compiled(self, auto_models: tuple[str, ...]) -> Compiled:
        cfg = Config(routing=RoutingConfig(auto_models=auto_models))
        return Compiled.build(Snapshot(1, self.keys, (), Policy.build(cfg, {})), ())

    def body(self, route: str, doc: dict[str, Any], key: str = "k1") -> tuple[Admit, LocalReply | Forward]:
        admit = Admit(routes.classify(route), self.keys[key], ((b"X-RateLimit-Limit", b"10"),))
        return admit, self.gate.body(admit, json.dumps(doc).encode())


def key(key_id: str = "k1", **fields: Any) -> KeyRecord:
    return KeyRecord(key_id, "alice", "hash", **fields)


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("route", "doc", "chosen"),
    [
        ("/api/chat", chat(), "qwen2.5:0.5b"),  # completion: the smallest
        ("/api/chat", chat(messages=[{"role": "user", "content": "x", "images": [IMG]}]), "llava:7b"),
        ("/api/generate", {"model": "Auto", "prompt": "x", "think": True}, "deepseek-r1:7b"),
        ("/api/embed", {"model": "auto:latest", "input": "x"}, "nomic-embed-text:latest"),
        ("/api/embeddings", {"model": "auto", "prompt": "x"}, "nomic-embed-text:latest"),
        ("/v1/embeddings", {"model": "auto", "input": "x"}, "nomic-embed-text:latest"),
        (
            "/v1/chat/completions",
            chat(tools=[{"type": "function", "function": {"name": "f"}}]),
            "qwen2.5:0.5b",
        ),
    ],
)
def test_auto_rewrites_the_body_names_the_model_and_keeps_the_rate_headers(
    route: str, doc: dict[str, Any], chosen: str
) -> None:
    world = World(key())
    admit, outcome = world.body(route, doc)
    assert isinstance(outcome, Forward)
    assert json.loads(outcome.body) == {**doc, "model": chosen}
    assert outcome.model == admit.model == chosen  # routed and accounted under the choice
    assert admit.rate_headers == ((b"X-RateLimit-Limit", b"10"), (b"X-Fortress-Model", chosen.encode()))


def test_other_models_and_routes_pass_untouched() -> None:
    world = World(key())
    raw_doc = {"model": "llava:7b", "messages": [], "stream": False}
    admit, outcome = world.body("/api/chat", raw_doc)
    assert isinstance(outcome, Forward) and outcome.body == json.dumps(raw_doc).encode()
    assert admit.rate_headers == ((b"X-RateLimit-Limit", b"10"),)
    # "auto" on a route that has no choice (model information): an ordinary, unknown model name
    admit, outcome = world.body("/api/show", {"model": "auto"})
    assert isinstance(outcome, Forward) and outcome.model == "auto" and len(admit.rate_headers) == 1
    # a name that merely contains "auto" is a model like any other
    _, outcome = world.body("/api/chat", {"model": "autocoder:7b", "messages": []})
    assert isinstance(outcome, Forward) and outcome.model == "autocoder:7b"


def test_the_allow_list_narrows_the_choice_and_the_refusal_names_what_is_missing() -> None:
    world = World(key("k1", models=("qwen*", "nomic*")), key("k2", models=("llava*",)))
    _, outcome = world.body("/api/chat", chat(messages=[{"role": "user", "content": "x", "images": [IMG]}]))
    assert isinstance(outcome, LocalReply) and outcome.status == 400
    assert json.loads(outcome.body) == {"error": 'model "auto": no available model supports vision'}
    _, outcome = world.body("/v1/chat/completions", chat(think=True))
    assert isinstance(outcome, LocalReply) and outcome.status == 400
    assert (
        json.loads(outcome.body)["error"]["message"] == 'model "auto": no available model supports thinking'
    )
    _, outcome = world.body("/api/embed", {"model": "auto", "input": "x"}, key="k2")
    assert isinstance(outcome, LocalReply) and b"supports embedding" in outcome.body
    # without "auto" the allow-list check is the usual one
    _, outcome = world.body("/api/chat", {"model": "llava:7b", "messages": []})
    assert isinstance(outcome, LocalReply) and outcome.status == 403


def test_preferences_then_the_key_s_own_auto_models() -> None:
    world = World(key("k1"), key("k2", auto_models=("llama*",)), auto_models=("llava*", "llama*", "qwen*"))
    assert world.body("/api/chat", chat())[0].model == "llava:7b"
    assert world.body("/api/chat", chat(), key="k2")[0].model == "llama3.2:latest"


def test_clamps_and_the_choice_both_reach_the_body() -> None:
    world = World(key(max_num_ctx=2048))
    _, outcome = world.body("/api/chat", chat(options={"num_ctx": 100000}))
    assert isinstance(outcome, Forward)
    assert json.loads(outcome.body)["model"] == "qwen2.5:0.5b"
    assert json.loads(outcome.body)["options"]["num_ctx"] == 2048


def test_nothing_learnt_yet_is_a_503_to_retry() -> None:
    world = World(key())
    world.store = CapabilityStore()
    world.chooser.cache.store = world.store
    _, outcome = world.body("/api/chat", chat())
    assert isinstance(outcome, LocalReply) and outcome.status == 503
    assert (b"Retry-After", b"1") in outcome.headers


def test_choices_are_remembered_until_the_pool_or_the_configuration_changes() -> None:
    world = World(key())
    first = world.chooser.pick(routes.classify("/api/chat"), chat(), world.keys["k1"], lambda _n: True)
    again = world.chooser.pick(routes.classify("/api/chat"), chat(), world.keys["k1"], lambda _n: True)
    # one memo entry serves both (compiled, the tuple handed out is rebuilt from it: equal, not identical)
    assert first == again and list(world.chooser._memo.values()) == [first]
    world.inventory.set_tags(
        "a", {"models": [{"name": "tiny:1b", "digest": "d-tiny", "size": 1}, *_listed(world)]}, now=2
    )
    world.store.learnt("d-tiny", Capabilities(frozenset({"completion"})))
    assert world.body("/api/chat", chat())[0].model == "tiny:1b"  # a new pool: chosen afresh
    world.chooser.configure(("llava*",))
    assert world.body("/api/chat", chat())[0].model == "llava:7b"  # a new configuration: chosen afresh


def _listed(world: World) -> list[dict[str, Any]]:
    entry = world.inventory.get("a")
    assert entry is not None
    return list(entry.models.values())


@settings(max_examples=200, deadline=None)
@given(
    allow=st.lists(
        st.sampled_from(["qwen*", "llava*", "llama*", "deepseek*", "nomic*", "none*"]), max_size=3
    ),
    images=st.booleans(),
    tools=st.booleans(),
    think=st.booleans(),
    embed=st.booleans(),
)
def test_a_key_s_allow_list_is_never_escaped(
    allow: list[str], images: bool, tools: bool, think: bool, embed: bool
) -> None:
    world = World(key(models=tuple(allow)))
    doc = chat()
    if images:
        doc["images"] = [IMG]
    if tools:
        doc["tools"] = [{"type": "function", "function": {"name": "f"}}]
    if think:
        doc["think"] = True
    admit, outcome = world.body("/api/embed" if embed else "/api/generate", doc)
    allowed = world.gate.c.model_allowed["k1"]
    if isinstance(outcome, Forward):
        assert allowed(outcome.model or "") and admit.model == outcome.model
    else:
        assert outcome.status == 400 and not any(allowed(n) for n in _fitting(images, tools, think, embed))


def _fitting(images: bool, tools: bool, think: bool, embed: bool) -> list[str]:
    wanted = (
        {"embedding"}
        if embed
        else {"completion"}
        | {c for c, on in (("vision", images), ("tools", tools), ("thinking", think)) if on}
    )
    return [n for n, (caps, _) in CATALOG.items() if wanted <= caps]
