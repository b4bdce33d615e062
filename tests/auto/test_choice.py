"""Model "auto": the request's needs, the choice (table and property tests), the candidate cache, helpers."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fortress.routing.auto import (
    AUTO_ROUTES,
    Candidate,
    CandidateCache,
    Needs,
    Refusal,
    candidates,
    choose,
    glob_rank,
    is_auto,
    model_header,
    needs_of,
)
from fortress.routing.capabilities import Capabilities, CapabilityStore
from fortress.routing.inventory import Inventory

IMG = "iVBORw0KGgo="


@pytest.mark.parametrize(
    ("route", "body", "wanted", "min_context"),
    [
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}, {"completion"}, None),
        ("/api/generate", {"prompt": "hi"}, {"completion"}, None),
        ("/api/generate", {"prompt": "hi", "images": [IMG]}, {"completion", "vision"}, None),
        ("/api/generate", {"prompt": "hi", "images": []}, {"completion"}, None),
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "x", "images": [IMG]}]},
            {"completion", "vision"},
            None,
        ),
        ("/api/chat", {"messages": [{"role": "user", "content": "x", "images": None}]}, {"completion"}, None),
        (
            "/v1/chat/completions",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + IMG}},
                        ],
                    }
                ]
            },
            {"completion", "vision"},
            None,
        ),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
            {"completion"},
            None,
        ),
        (
            "/api/chat",
            {"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}]},
            {"completion", "tools"},
            None,
        ),
        (
            "/api/chat",
            {"messages": [], "tools": []},
            {"completion"},
            None,
        ),  # the Python client always sends []
        (
            "/v1/chat/completions",
            {"messages": [], "tools": [{"type": "function"}]},
            {"completion", "tools"},
            None,
        ),
        ("/api/chat", {"think": True}, {"completion", "thinking"}, None),
        ("/api/generate", {"think": "high"}, {"completion", "thinking"}, None),
        ("/api/generate", {"think": False}, {"completion"}, None),
        ("/api/generate", {"think": "nonsense"}, {"completion"}, None),  # Ollama refuses it; no need here
        ("/v1/chat/completions", {"reasoning_effort": "medium"}, {"completion", "thinking"}, None),
        ("/v1/chat/completions", {"reasoning_effort": "none"}, {"completion"}, None),
        ("/v1/chat/completions", {"reasoning": {"effort": "high"}}, {"completion", "thinking"}, None),
        ("/api/generate", {"prompt": "def f(", "suffix": "return x"}, {"completion", "insert"}, None),
        ("/v1/completions", {"prompt": "x", "suffix": ""}, {"completion"}, None),
        ("/api/embed", {"input": "hi"}, {"embedding"}, None),
        ("/api/embeddings", {"prompt": "hi"}, {"embedding"}, None),
        ("/v1/embeddings", {"input": ["a", "b"]}, {"embedding"}, None),
        ("/embeddings", {"input": "a", "images": [IMG]}, {"embedding"}, None),  # an embed route only embeds
        ("/api/chat", {"options": {"num_ctx": 65536}}, {"completion"}, 65536),
        ("/api/embed", {"options": {"num_ctx": 4096}}, {"embedding"}, 4096),
        ("/api/chat", {"options": {"num_ctx": "65536"}}, {"completion"}, None),
        ("/api/chat", {"options": {"num_ctx": True}}, {"completion"}, None),
        ("/api/chat", {"options": {"num_ctx": 0}}, {"completion"}, None),
        ("/api/chat", {"options": "junk", "messages": "junk", "tools": "junk"}, {"completion"}, None),
        (
            "/api/chat",
            {"messages": [None, 3, {"content": [None, {"type": "image_url"}]}], "tools": [1], "think": "low"},
            {"completion", "vision", "tools", "thinking"},
            None,
        ),
    ],
)
def test_needs_of(route: str, body: dict[str, Any], wanted: set[str], min_context: int | None) -> None:
    assert needs_of(route, body) == Needs(frozenset(wanted), min_context)


def test_auto_routes_are_the_issue_s_routes_and_their_aliases() -> None:
    assert {
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/v1/chat/completions",
        "/v1/embeddings",
    } <= AUTO_ROUTES
    assert "/api/pull" not in AUTO_ROUTES and "/api/show" not in AUTO_ROUTES


@pytest.mark.parametrize(
    ("model", "auto"),
    [
        ("auto", True),
        ("AUTO", True),
        ("auto:latest", True),
        ("library/auto", True),
        ("autos", False),
        ("auto:7b", False),
        ("llama3", False),
        (None, False),
        (7, False),
        ("", False),
    ],
)
def test_is_auto(model: Any, auto: bool) -> None:
    assert is_auto(model) is auto


def C(name: str, caps: str, ctx: int | None = None, size: int | None = None) -> Candidate:
    return Candidate(name, frozenset(caps.split()), ctx, size)


POOL = (
    C("qwen2.5:0.5b", "completion tools", 32768, 400),
    C("llama3.2:latest", "completion tools", 131072, 2000),
    C("llava:7b", "completion vision", 32768, 4700),
    C("llama3.2-vision:11b", "completion vision tools", 131072, 7800),
    C("deepseek-r1:7b", "completion thinking", 131072, 4600),
    C("qwen3:8b", "completion tools thinking", 40960, 5200),
    C("nomic-embed-text:latest", "embedding", 2048, 270),
    C("mxbai-embed-large:latest", "embedding", 512, 670),
    C("starcoder2:3b", "completion insert", 16384, 1700),
    C("oa/gpt-4o", "completion vision tools"),  # a provider: no size, no context length known
)


def _allow(globs: tuple[str, ...]) -> Any:
    return None if not globs else (lambda name: any(fnmatch.fnmatch(name, g) for g in globs))


@pytest.mark.parametrize(
    ("needs", "ctx", "prefs", "key_prefs", "allowed", "loaded", "down", "expected"),
    [
        # plain needs: the smallest fitting model
        ("completion", None, (), (), (), (), (), "qwen2.5:0.5b"),
        ("completion tools", None, (), (), (), (), (), "qwen2.5:0.5b"),
        ("completion vision", None, (), (), (), (), (), "llava:7b"),
        ("completion vision tools", None, (), (), (), (), (), "llama3.2-vision:11b"),
        ("completion thinking", None, (), (), (), (), (), "deepseek-r1:7b"),
        ("completion thinking tools", None, (), (), (), (), (), "qwen3:8b"),
        ("embedding", None, (), (), (), (), (), "nomic-embed-text:latest"),
        ("completion insert", None, (), (), (), (), (), "starcoder2:3b"),
        # context length
        ("embedding", 1000, (), (), (), (), (), "nomic-embed-text:latest"),
        ("completion", 100000, (), (), (), (), (), "llama3.2:latest"),
        ("completion thinking tools", 100000, (), (), (), (), (), Refusal(400, "", ("context_length",))),
        ("embedding", 4096, (), (), (), (), (), Refusal(400, "", ("context_length",))),
        # nothing has both: refused, no single capability missing
        ("completion insert vision", None, (), (), (), (), (), Refusal(400, "", ())),
        # [routing] auto_models: a filter and an order
        ("completion", None, ("llama*",), (), (), (), (), "llama3.2:latest"),
        ("completion thinking", None, ("qwen3*", "qwen*"), (), (), (), (), "qwen3:8b"),
        ("completion vision", None, ("oa/*", "*"), (), (), (), (), "oa/gpt-4o"),
        ("completion vision", None, ("LLAVA:7B",), (), (), (), (), "llava:7b"),  # case-insensitive
        ("embedding", None, ("mxbai-embed-large", "nomic*"), (), (), (), (), "mxbai-embed-large:latest"),
        ("completion vision", None, ("qwen*",), (), (), (), (), Refusal(400, "", ("vision",))),
        # the key's allow-list is never escaped
        ("completion vision", None, (), (), ("qwen*",), (), (), Refusal(400, "", ("vision",))),
        ("completion", None, (), (), ("llama*",), (), (), "llama3.2:latest"),
        ("completion vision", None, ("oa/*", "*"), (), ("llava*",), (), (), "llava:7b"),
        ("completion", None, (), (), ("nothing*",), (), (), Refusal(400, "", ("model",))),
        # the key's own auto_models narrow and order first
        ("completion", None, (), ("llava*", "*"), (), (), (), "llava:7b"),
        ("completion", None, ("qwen*", "*"), ("llama3.2:*", "qwen*"), (), (), (), "llama3.2:latest"),
        ("completion", None, (), ("nomic*",), (), (), (), Refusal(400, "", ("completion",))),
        # loaded beats smaller, but not the configured order
        ("completion", None, (), (), (), ("llama3.2:latest",), (), "llama3.2:latest"),
        ("completion", None, ("qwen*", "llama*"), (), (), ("llama3.2:latest",), (), "qwen2.5:0.5b"),
        ("completion", None, ("*",), (), (), ("starcoder2:3b", "llama3.2:latest"), (), "starcoder2:3b"),
        # a model only on unhealthy backends comes last, even before the configured order
        ("completion", None, (), (), (), (), ("qwen2.5:0.5b",), "starcoder2:3b"),
        ("completion vision", None, ("llava*", "*"), (), (), (), ("llava:7b",), "llama3.2-vision:11b"),
        (
            "completion vision",
            None,
            (),
            (),
            ("llava*",),
            (),
            ("llava:7b",),
            "llava:7b",
        ),  # nothing else: router 503s
    ],
)
def test_choice_table(
    needs: str,
    ctx: int | None,
    prefs: tuple[str, ...],
    key_prefs: tuple[str, ...],
    allowed: tuple[str, ...],
    loaded: tuple[str, ...],
    down: tuple[str, ...],
    expected: str | Refusal,
) -> None:
    pool = [
        Candidate(c.name, c.capabilities, c.context_length, c.size, c.name in loaded, c.name not in down)
        for c in POOL
    ]
    got = choose(
        Needs(frozenset(needs.split()), ctx),
        pool,
        preferences=prefs,
        key_preferences=key_prefs,
        allowed=_allow(allowed),
    )
    if isinstance(expected, str):
        assert isinstance(got, Candidate), got
        assert got.name == expected
    else:
        assert isinstance(got, Refusal), got
        assert (got.status, got.missing) == (expected.status, expected.missing)


@pytest.mark.parametrize(
    ("needs", "ctx", "allowed", "message"),
    [
        ("completion vision", None, ("qwen*",), 'model "auto": no available model supports vision'),
        ("completion thinking vision", None, ("qwen2*",), "no available model supports thinking and vision"),
        (
            "completion insert vision",
            None,
            (),
            "no single available model supports completion, insert and vision together",
        ),
        (
            "embedding",
            4096,
            (),
            "no available model with embedding has a context length of at least 4096 (options.num_ctx)",
        ),
        ("completion", None, ("nothing",), 'model "auto": no model is available for "auto" to this key'),
    ],
)
def test_refusals_name_what_is_missing(
    needs: str, ctx: int | None, allowed: tuple[str, ...], message: str
) -> None:
    got = choose(Needs(frozenset(needs.split()), ctx), POOL, allowed=_allow(allowed))
    assert isinstance(got, Refusal)
    assert message in got.message
    assert "qwen" not in got.message and "llava" not in got.message  # never names a model the key may not see


def test_no_known_model_at_all_is_a_503_worth_retrying() -> None:
    got = choose(Needs(frozenset({"completion"})), [])
    assert isinstance(got, Refusal) and got.status == 503 and "try again" in got.message


def test_a_provider_s_unknown_size_ranks_after_every_known_size() -> None:
    pool = [C("oa/gpt-4o", "completion vision"), C("llava:34b", "completion vision", size=20_166_497_128)]
    assert choose(Needs(frozenset({"completion", "vision"})), pool).name == "llava:34b"


def test_ties_go_by_name_so_the_choice_is_stable() -> None:
    pool = [C("b", "completion", size=10), C("a", "completion", size=10), C("c", "completion", size=10)]
    assert choose(Needs(frozenset({"completion"})), pool).name == "a"


@pytest.mark.parametrize(
    ("globs", "name", "rank"),
    [
        ((), "anything", 0),
        (("llama*",), "llama3:latest", 0),
        (("qwen*", "llama*"), "llama3:latest", 1),
        (("llama3",), "llama3:latest", 0),
        (("llama3",), "llama3:8b", None),
        (("LLaMA3:*",), "llama3:8b", 0),
        (("a/*",), "a/m", 0),
        (("  ", "m"), "m", 0),
    ],
)
def test_glob_rank(globs: tuple[str, ...], name: str, rank: int | None) -> None:
    assert glob_rank(globs, name) == rank


# -- the property: a choice always fits and is allowed; a refusal only when nothing could be chosen ----

CAPS = ("completion", "vision", "tools", "thinking", "embedding", "insert")
NAMES = ("alpha", "beta", "gamma", "delta", "p/one", "p/two", "omega:7b", "omega:1b")
GLOBS = ("*", "a*", "p/*", "*:7b", "omega*", "beta", "zzz*", "g?mma")

candidate_st = st.builds(
    Candidate,
    name=st.sampled_from(NAMES),
    capabilities=st.frozensets(st.sampled_from(CAPS)),
    context_length=st.none() | st.integers(1, 200_000),
    size=st.none() | st.integers(0, 10**10),
    loaded=st.booleans(),
    available=st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(
    pool=st.lists(candidate_st, max_size=8, unique_by=lambda c: c.name),
    wanted=st.frozensets(st.sampled_from(CAPS), min_size=1, max_size=3),
    min_context=st.none() | st.integers(1, 200_000),
    prefs=st.lists(st.sampled_from(GLOBS), max_size=3).map(tuple),
    key_prefs=st.lists(st.sampled_from(GLOBS), max_size=3).map(tuple),
    allowed_globs=st.lists(st.sampled_from(GLOBS), max_size=3).map(tuple),
)
def test_choice_always_fits_and_is_allowed_or_refuses_only_when_nothing_could(
    pool: list[Candidate],
    wanted: frozenset[str],
    min_context: int | None,
    prefs: tuple[str, ...],
    key_prefs: tuple[str, ...],
    allowed_globs: tuple[str, ...],
) -> None:
    needs = Needs(wanted, min_context)
    allowed = _allow(allowed_globs)

    def eligible(c: Candidate) -> bool:
        return (
            (allowed is None or allowed(c.name))
            and glob_rank(prefs, c.name) is not None
            and glob_rank(key_prefs, c.name) is not None
        )

    got = choose(needs, pool, preferences=prefs, key_preferences=key_prefs, allowed=allowed)
    if isinstance(got, Candidate):
        assert got in pool
        assert got.capabilities >= wanted
        assert min_context is None or got.context_length is None or got.context_length >= min_context
        assert eligible(got)
        if got.available is False:
            assert not any(eligible(c) and c.fits(needs) and c.available for c in pool)
    else:
        assert not any(eligible(c) and c.fits(needs) for c in pool)
        assert got.status == (503 if not pool else 400)
        for capability in got.missing:
            if capability in CAPS:
                assert not any(eligible(c) and capability in c.capabilities for c in pool)


# -- candidates from the inventory and the store; their cache ---------------------------------------------


def _tags(*models: tuple[str, str, int]) -> dict[str, Any]:
    return {"models": [{"name": n, "model": n, "digest": d, "size": s} for n, d, s in models]}


def test_candidates_join_inventory_and_store() -> None:
    inv = Inventory()
    inv.set_tags("a", _tags(("llava:7b", "d1", 4700), ("new:1b", "d9", 10)), now=1)
    inv.set_tags("b", _tags(("llava:7b", "d2", 4800)), now=1)
    inv.set_ps("b", {"models": [{"name": "llava:7b"}]})
    store = CapabilityStore()
    store.learnt("d1", Capabilities(frozenset({"completion", "vision", "tools"}), 32768))
    store.learnt("d2", Capabilities(frozenset({"completion", "vision"}), 8192))
    pool = candidates(inv, store, healthy={"a"})
    assert pool == (  # d9 not learnt yet: not a candidate; two copies: what both can do
        Candidate("llava:7b", frozenset({"completion", "vision"}), 8192, 4700, loaded=True, available=True),
    )
    assert candidates(inv, store, healthy=set())[0].available is False


def test_the_cache_rebuilds_only_on_change() -> None:
    inv = Inventory()
    inv.set_tags("a", _tags(("m1", "d1", 10)), now=1)
    store = CapabilityStore()
    cache = CandidateCache(inv, store)
    healthy = frozenset({"a"})
    completion = Needs(frozenset({"completion"}))
    first = choose(completion, cache.pool(healthy))
    assert isinstance(first, Refusal) and first.status == 503  # nothing learnt yet
    store.learnt("d1", Capabilities(frozenset({"completion"})))
    pool = cache.pool(healthy)
    assert choose(completion, pool).name == "m1"
    assert cache.pool(healthy) is pool  # nothing changed: the same tuple
    inv.set_tags("a", _tags(("m1", "d1", 10), ("m0", "d0", 5)), now=2)
    store.learnt("d0", Capabilities(frozenset({"completion"})))
    assert choose(completion, cache.pool(healthy)).name == "m0"
    unhealthy = cache.pool(frozenset())
    assert unhealthy is not pool and not any(c.available for c in unhealthy)
    assert choose(completion, unhealthy).name == "m0"  # still a choice: the router answers 503


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("llava:7b", b"llava:7b"),
        ("oa/gpt-4o", b"oa/gpt-4o"),
        ("hf.co/u/m:Q4_K_M", b"hf.co/u/m:Q4_K_M"),
        ("evil\r\nSet-Cookie: x", b"evil%0D%0ASet-Cookie:%20x"),
        ("caf\u00e9", b"caf%C3%A9"),
    ],
)
def test_model_header_is_always_a_safe_header_value(name: str, value: bytes) -> None:
    assert model_header(name) == (b"X-Fortress-Model", value)
