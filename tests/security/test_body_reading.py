"""Issue 9.1 through the real proxy: whatever reaches the backend reads, the Go way, as Fortress checked it.

A corpus of bodies (the shapes the issue found, then generated case mutations and repeats of every field
Fortress reads) goes through a real Fortress to a backend that keeps every body: the simulator with
`--journal-bodies`, then a recording backend that answers every route with 200 (the simulator's own state
changes with copy and delete, so some bodies stop at Fortress's 404; the recorder takes them all).
Each body is refused (400, or 403 by policy) and never forwarded, or forwarded; a forwarded body is
decoded the way Ollama's Go code decodes it (tests/security/godecode.py) and must give the same values as
Python's reading, and those values must obey the key's policy (allowed models, registries, caps). The
corpus size is printed (`-s`).
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fortress.pipeline.jsonbody import NESTED, READ
from tests.conftest import Fortress, Sim, make_fortress, start_sim
from tests.security.conftest import auth
from tests.security.godecode import STRUCTS, go_view, python_view, zero
from tests.security.recorder import recorder

D = "sha256:" + "ab" * 32
ALLOWED = ("llama3*", "mine*")
CAPS = {"num_ctx": 2048, "num_predict": 64, "keep_alive": 300}
MSGS = [{"role": "user", "content": "hi"}]

# A request each route accepts from both keys: exact-case fields, allowed models, allow-listed registry.
BASE: dict[str, list[tuple[str, Any]]] = {
    "/api/generate": [("model", "llama3.2"), ("prompt", "hi"), ("stream", False)],
    "/api/chat": [("model", "llama3.2"), ("messages", MSGS), ("stream", False)],
    "/api/embed": [("model", "llama3.2"), ("input", "hi")],
    "/api/embeddings": [("model", "llama3.2"), ("prompt", "hi")],
    "/api/show": [("model", "llama3.2")],
    "/api/pull": [("model", "llama3.2"), ("stream", False)],
    "/api/push": [("model", "mine/llama3.2"), ("stream", False)],
    "/api/create": [("model", "mine"), ("from", "llama3.2"), ("files", {"m.gguf": D}), ("stream", False)],
    "/api/copy": [("source", "llama3.2"), ("destination", "mine-copy")],
    "/api/delete": [("model", "mine-copy")],
    "/v1/chat/completions": [("model", "llama3.2"), ("messages", MSGS)],
}
EVIL = "evil.example/ns/m"
# Values a client would smuggle past the checks in a differently written key.
BAD: dict[str, list[Any]] = {
    "model": ["forbidden", "gpt-oss:120b-cloud", EVIL],
    "name": ["forbidden", EVIL],
    "source": ["forbidden"],
    "destination": [EVIL],
    "from": [EVIL, "x:cloud"],
    "insecure": [True],
    "files": [{"../../etc/ld.so.preload": D}],
    "adapters": [{"../lora": D}],
    "draft_files": [{"/etc/passwd": D}],
    "path": ["/etc/shadow"],
    "modelfile": ["FROM /etc/passwd"],
    "remote_host": ["https://ollama.com"],
    "options": [{"num_ctx": 1_000_000, "num_predict": -1}],
    "keep_alive": [-1, "24h"],
    "max_tokens": [100_000],
    "stream": [True, False],
}


def render(members: list[tuple[str, Any]]) -> bytes:
    """An object written by hand, so keys may repeat and keep their order."""
    return ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in members) + "}").encode()


# The shapes issue 9 reported, each answered 200 and forwarded unchanged before the fix.
REPORTED: list[tuple[str, bytes]] = [
    *((p, render([*BASE[p], ("Model", "forbidden")])) for p in BASE if p != "/api/copy"),
    *(
        (p, render([("MODEL", "forbidden"), *BASE[p]]))
        for p in ("/api/generate", "/api/chat", "/v1/chat/completions")
    ),
    ("/api/generate", render([*BASE["/api/generate"], ("Model", "gpt-oss:120b-cloud")])),
    ("/v1/chat/completions", render([*BASE["/v1/chat/completions"], ("Model", "qwen3-coder:480b-cloud")])),
    (
        "/api/generate",
        render([*BASE["/api/generate"], ("options", {"num_ctx": 1024}), ("Options", {"num_ctx": 1_000_000})]),
    ),
    ("/api/chat", render([*BASE["/api/chat"], ("Options", {"num_ctx": 1_000_000})])),
    ("/api/generate", render([*BASE["/api/generate"], ("options", {"num_ctx": 1024, "NUM_CTX": 1_000_000})])),
    (
        "/api/generate",
        render([*BASE["/api/generate"], ("options", {"num_ctx": 10**6}), ("options", {"seed": 1})]),
    ),
    ("/api/generate", render([*BASE["/api/generate"], ("KEEP_ALIVE", -1)])),
    ("/api/chat", render([*BASE["/api/chat"], ("keep_alive", "1m"), ("KEEP_ALIVE", -1)])),
    ("/api/embed", render([*BASE["/api/embed"], ("\u212aeep_alive", -1)])),
    ("/api/pull", render([*BASE["/api/pull"], ("MODEL", EVIL)])),
    ("/api/pull", render([("Model", EVIL), *BASE["/api/pull"]])),
    ("/api/push", render([*BASE["/api/push"], ("Model", "evil.example/ns/stolen")])),
    ("/api/pull", render([*BASE["/api/pull"], ("Insecure", True)])),
    ("/api/pull", render([("model", EVIL), ("model", None), ("name", "llama3.2")])),
    ("/api/create", render([*BASE["/api/create"], ("From", EVIL)])),
    ("/api/create", render([*BASE["/api/create"], ("Modelfile", "FROM /etc/passwd")])),
    ("/api/create", render([("model", "mine"), ("Files", {"../../etc/ld.so.preload": D})])),
    ("/api/create", render([("model", "mine"), ("files", {"../../x": D}), ("files", {"m.gguf": D})])),
    ("/api/copy", render([*BASE["/api/copy"], ("Destination", "evil.example/ns/stolen")])),
    ("/api/delete", render([*BASE["/api/delete"], ("Name", "forbidden")])),
    ("/api/show", render([*BASE["/api/show"], ("\u017ftream", True)])),
    ("/api/generate", render([*BASE["/api/generate"], ("\u017fTREAM", True)])),
]
# Benign bodies, which must be forwarded: the checks must not refuse ordinary traffic.
BENIGN: list[tuple[str, bytes]] = [
    *((p, render(members)) for p, members in BASE.items()),
    ("/api/generate", render([*BASE["/api/generate"], ("options", {"num_ctx": 1024, "Mirostat": 1})])),
    ("/api/chat", render([*BASE["/api/chat"], ("Format", {"type": "object"})])),  # not read: any case
    ("/api/pull", render([("name", "llama3.2"), ("model", "llama3.2"), ("insecure", True)])),  # Open WebUI
]

seen: Counter[str] = Counter()


def allowed(model: str) -> bool:
    return any(fnmatch.fnmatch(model.lower(), g) for g in ALLOWED)


def seconds(value: Any) -> float:
    if isinstance(value, str):
        return float(value[:-1]) * {"s": 1, "m": 60, "h": 3600}[value[-1]]
    return float(value)


def obey(path: str, go: dict[str, Any], capped: bool) -> None:
    """The policy holds for what Ollama will read (the key allows llama3* and mine*, nothing cloudy)."""
    names = [go.get("source")] if path == "/api/copy" else [go.get("model") or go.get("name")]
    for name in filter(None, names):
        assert allowed(name), (path, go)
    text = json.dumps(go)
    assert "evil.example" not in text and "cloud" not in text and "ollama.com" not in text, (path, go)
    assert not go.get("insecure") and not go.get("path") and not go.get("modelfile"), (path, go)
    for field in ("files", "adapters", "draft_files"):
        assert all(".." not in k and not k.startswith("/") for k in go.get(field) or {}), (path, go)
    if capped:
        options = go.get("options") or {}
        assert 0 < options.get("num_ctx", 1) <= CAPS["num_ctx"], (path, go)
        assert 0 <= options.get("num_predict", 0) <= CAPS["num_predict"], (path, go)
        if go.get("keep_alive") is not None:
            assert 0 <= seconds(go["keep_alive"]) <= CAPS["keep_alive"], (path, go)
        assert (go.get("max_tokens") or 0) <= CAPS["num_predict"], (path, go)


def send(proxy: Proxy, path: str, raw: bytes, capped: bool) -> int:
    """Send one body; check it was refused and never forwarded, or that what arrived reads the same.

    Answers 0 for a body that reached the backend (whatever the backend answered), else Fortress's status.
    """
    proxy.clear()
    method = "DELETE" if path == "/api/delete" else "POST"
    key = proxy.capped if capped else proxy.plain
    r = proxy.client.request(
        method, path, content=raw, headers={**auth(key), "Content-Type": "application/json"}
    )
    arrived = proxy.bodies(method, path)
    seen[f"sent to the {proxy.kind}"] += 1
    if not arrived:
        # 404: the simulator no longer holds a model the corpus deleted (Fortress's own answer)
        assert r.status_code in (400, 403, 404), (path, raw, r.status_code, r.text)
        seen[f"refused {r.status_code} ({proxy.kind})"] += 1
        return r.status_code
    assert len(arrived) == 1, (path, raw)
    forwarded = arrived[0]
    go, py = go_view(path, forwarded), python_view(path, forwarded)
    for name in STRUCTS[path].keys() & READ:
        if name in NESTED and isinstance(py[name], dict):
            for inner in NESTED[name]:
                assert zero((go[name] or {}).get(inner)) == zero(py[name].get(inner)), (path, raw, forwarded)
        else:
            assert zero(go.get(name)) == zero(py[name]), (path, raw, forwarded)
    obey(path, go, capped)
    seen[f"forwarded ({proxy.kind})"] += 1
    return 0


class Proxy:
    """A Fortress in front of one backend that keeps bodies, with two admin keys (plain and capped)."""

    def __init__(
        self, f: Fortress, kind: str, clear: Callable[[], None], bodies: Callable[[str, str], list[bytes]]
    ) -> None:
        self.f, self.kind, self.clear, self.bodies = f, kind, clear, bodies
        common = ("--scope", "admin", "--models", ",".join(ALLOWED))
        self.plain = f.key("plain", *common)
        self.capped = f.key(
            "capped", *common, "--max-num-ctx", "2048", "--max-num-predict", "64", "--max-keep-alive", "5m"
        )
        self.client = httpx.Client(base_url=f.url, timeout=10)


@contextmanager
def _backend(kind: str) -> Iterator[tuple[str, Callable[[], None], Callable[[str, str], list[bytes]]]]:
    """(url, clear, bodies(method, path)) of a backend that keeps what it was sent."""
    if kind == "simulator":
        sim = start_sim("--journal-bodies", "--models", "llama3.2:latest,mine-copy:latest", name="bodies")

        def bodies(method: str, path: str) -> list[bytes]:
            return [q["body"].encode() for q in sim.requests() if (q["method"], q["path"]) == (method, path)]

        try:
            yield sim.url, sim.clear, bodies
        finally:
            sim.stop()
    else:
        with recorder() as rec:
            yield rec.url, rec.raw.clear, lambda _method, path: [raw for p, raw in rec.raw if p == path]


@pytest.fixture(scope="module", params=["simulator", "recorder"])
def proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with _backend(request.param) as (url, clear, bodies):
        f = make_fortress(tmp_path_factory.mktemp("bodies"), [("backend", url)])
        f.serve()
        p = Proxy(f, request.param, clear, bodies)
        try:
            yield p
        finally:
            p.client.close()
            f.stop()
            print(f"\ncorpus through the proxy so far: {dict(seen)}")


@pytest.mark.parametrize("capped", [False, True], ids=["plain", "capped"])
def test_reported_shapes_are_refused_and_never_forwarded(proxy: Proxy, capped: bool) -> None:
    for path, raw in REPORTED:
        assert send(proxy, path, raw, capped) == 400, (path, raw)


@pytest.mark.parametrize("capped", [False, True], ids=["plain", "capped"])
def test_benign_bodies_are_forwarded(proxy: Proxy, capped: bool) -> None:
    for path, raw in BENIGN:
        # the copy just before puts the deleted model back on the simulator; if Fortress has not seen it
        # there yet, it answers 404 itself
        either = {0, 404} if proxy.kind == "simulator" and path == "/api/delete" else {0}
        assert send(proxy, path, raw, capped) in either, (path, raw)


_SPECIAL = {"k": ["\u212a"], "s": ["\u017f"]}


@st.composite
def recased(draw: st.DrawFn, name: str) -> str:
    spelt = "".join(draw(st.sampled_from([c, c.upper(), *_SPECIAL.get(c, [])])) for c in name)
    return spelt if spelt != name else name.upper()


@st.composite
def smuggled(draw: st.DrawFn) -> tuple[str, bytes]:
    """A route's ordinary body plus one field written again: recased, repeated with null, or merged."""
    path = draw(st.sampled_from(sorted(BASE)))
    members = list(BASE[path])
    field = draw(st.sampled_from(sorted((STRUCTS[path].keys() | {"path", "modelfile"}) & BAD.keys())))
    bad = draw(st.sampled_from(BAD[field]))
    how = draw(st.sampled_from(["recased", "null after", "merged", "inner recased", "unread recased"]))
    if how == "unread recased":  # harmless: Fortress does not read the field, so it must go through
        unread = [i for i, (name, _) in enumerate(members) if name not in READ]
        if not unread:
            return path, render([*members, ("Comment", bad)])
        i = draw(st.sampled_from(unread))
        members[i] = (draw(recased(members[i][0])), members[i][1])
        extra = []
    elif how == "recased":
        extra = [(draw(recased(field)), bad)]
    elif how == "null after":
        extra = [(field, bad), (field, None)]
    elif how == "merged":
        extra = [(field, bad), (field, {"m.gguf": D} if isinstance(bad, dict) else bad)]
    else:
        inner = draw(st.sampled_from(["num_ctx", "num_predict"]))
        extra = [("options", {inner: 100, draw(recased(inner)): -1})]
    at = draw(st.integers(0, len(members)))
    return path, render(members[:at] + extra + members[at:])


@given(smuggled(), st.booleans())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_case_mutations_never_reach_the_backend_differently(
    proxy: Proxy, case: tuple[str, bytes], capped: bool
) -> None:
    send(proxy, *case, capped)


def test_open_webui_pull_runs_securely_on_the_simulator(tmp_path: Path, sim: Sim) -> None:
    """Open WebUI's pull body has `insecure: true`: with an admin key it pulls from the default registry."""
    f = make_fortress(tmp_path, [("local", sim.url)])
    f.serve()
    try:
        key = f.key("root", "--scope", "admin")
        body = json.dumps({"name": "smollm:135m", "model": "smollm:135m", "insecure": True})
        sim.clear()
        with httpx.stream("POST", f"{f.url}/api/pull", content=body, headers=auth(key), timeout=30) as r:
            lines = [json.loads(line) for line in r.iter_lines() if line.strip()]
        assert r.status_code == 200 and lines[-1] == {"status": "success"}, lines[-3:]
        forwarded = [q for q in sim.requests() if q["path"] == "/api/pull"]
        assert [q["body_length"] for q in forwarded] == [
            len(json.dumps({"name": "smollm:135m", "model": "smollm:135m"}))
        ]
        assert "smollm:135m" in {m["name"] for m in httpx.get(f"{sim.url}/api/tags").json()["models"]}
        evil = json.dumps({"model": EVIL, "insecure": True})
        refused = httpx.post(f"{f.url}/api/pull", content=evil, headers=auth(key))
        assert refused.status_code == 403 and "allow-listed" in refused.json()["error"]
    finally:
        f.stop()
