"""Poller and control client against real simulator processes (and, for fault shapes the simulator
cannot produce: hangs, 500s on control routes, TLS, dropped idle connections, a canned server)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fortress.backends.client import BackendClient, BackendError
from fortress.backends.target import Target
from fortress.cli import self_signed as cli_self_signed
from fortress.routing import federation
from fortress.routing.choose import Router
from fortress.routing.poller import InventoryPoller
from fortress.state.snapshot import BackendRecord

from .canned import Canned
from .conftest import Sim

LOOPBACK = "127.0.0.1"
CONTROL_PATHS = {"/api/version", "/api/tags", "/api/ps"}


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


@pytest.fixture
async def servers() -> AsyncIterator[list[Canned]]:
    started: list[Canned] = []
    yield started
    for server in started:
        await server.stop()


async def serve(servers: list[Canned], **state: object) -> Canned:
    server = await Canned(**state).start()  # type: ignore[arg-type]
    servers.append(server)
    return server


def client_for(url: str, timeout_s: float = 3.0, **record: str) -> BackendClient:
    return BackendClient(Target.from_record(BackendRecord("a", url, **record)), timeout_s=timeout_s)


def poller_for(router: Router, **kwargs: float) -> InventoryPoller:
    options = {"interval_s": 60.0, "health_interval_s": 60.0, "timeout_s": 2.0, **kwargs}
    return InventoryPoller(router, **options)  # type: ignore[arg-type]


async def test_poller_fills_inventory_and_routes(sims: Callable[..., Sim]) -> None:
    a = sims("--models", "llama3,qwen:7b", "--loaded", "qwen:7b", "--version", "0.12.6", "--name", "a")
    b = sims("--models", "llama3", "--version", "0.11.0", "--name", "b")
    router = Router([BackendRecord("a", a.url), BackendRecord("b", b.url)])
    # generous: on a busy machine a 2 s call timeout fails a probe (no inventory, and a second connection)
    poller = poller_for(router, timeout_s=30.0)
    poller.sync()
    try:
        assert await poller.ready(60)
        choice = router.choose("qwen:7b")
        assert choice is not None and choice.backend.name == "a" and choice.loaded
        assert router.choose("mistral") is None
        assert federation.version(router.inventory, router.healthy()) == b'{"version":"0.11.0"}'
        assert {e["name"]: e["models"] for e in router.export()} == {"a": 2, "b": 1}
        merged = json.loads(federation.tags(router.inventory, router.healthy()))
        assert sorted(m["name"] for m in merged["models"]) == ["llama3:latest", "qwen:7b"]
    finally:
        await poller.aclose()
    # only control-plane GETs and one /api/show per model digest (capabilities), with the backend's own
    # Host, over one kept-alive connection each
    learnt = router.capabilities.export(router.inventory)
    assert learnt["a"] == {"llama3:latest": ["completion", "tools"], "qwen:7b": ["completion", "tools"]}
    shown = [r["path"] for sim in (a, b) for r in sim.requests() if r["method"] == "POST"]
    assert shown.count("/api/show") == len(shown) and 2 <= len(shown) <= 3  # llama3's digest: once or twice
    for sim in (a, b):
        seen = sim.requests()
        assert {(r["method"], r["path"]) for r in seen} == {("GET", p) for p in CONTROL_PATHS} | {
            ("POST", "/api/show")
        }
        hosts = {value for r in seen for name, value in r["headers"] if name.lower() == "host"}
        assert hosts == {f"127.0.0.1:{sim.port}"}
        assert len({r["peer"] for r in seen}) == 1


async def test_poke_after_delete_and_copy_refreshes_at_once(sims: Callable[..., Sim]) -> None:
    a = sims("--models", "old,keep")
    router = Router([BackendRecord("a", a.url)])
    poller = poller_for(router)  # the interval is a minute: only poke can explain a refresh
    poller.sync()
    try:
        assert await poller.ready(5)
        assert a.call("DELETE", "/api/delete", {"model": "old"}).status_code == 200
        assert a.call("POST", "/api/copy", {"source": "keep", "destination": "new"}).status_code == 200
        assert router.inventory.holders("old:latest") == ("a",)  # nobody told the poller yet
        poller.poke("a")
        await eventually(lambda: router.inventory.holders("new:latest") == ("a",))
        assert router.inventory.holders("old:latest") == ()
        poller.poke("unknown")  # harmless
    finally:
        await poller.aclose()


async def test_model_loaded_by_traffic_is_preferred_after_refresh(sims: Callable[..., Sim]) -> None:
    a = sims("--models", "m")
    b = sims("--models", "m")
    router = Router([BackendRecord("a", a.url), BackendRecord("b", b.url)])
    poller = poller_for(router)
    poller.sync()
    try:
        assert await poller.ready(5)
        assert router.inventory.loaded_on("m:latest") == frozenset()
        load = await asyncio.to_thread(b.call, "POST", "/api/generate", {"model": "m", "prompt": ""})
        assert load.json()["done_reason"] == "load"
        poller.poke()
        await eventually(lambda: router.inventory.loaded_on("m:latest") == {"b"})
        for _ in range(3):
            choice = router.choose("m")
            assert choice is not None and choice.backend.name == "b" and choice.loaded
    finally:
        await poller.aclose()


async def test_dead_backend_opens_breaker_and_comes_back(sims: Callable[..., Sim]) -> None:
    a = sims("--models", "m")
    router = Router([BackendRecord("a", a.url)], threshold=2, cool_down_s=0.2)
    poller = poller_for(router, health_interval_s=0.05)
    poller.sync()
    try:
        assert await poller.ready(5)
        assert router.choose("m") is not None
        a.stop()
        await eventually(lambda: router.export()[0]["state"] == "open")
        assert router.choose("m") is None
        assert "ConnectionRefusedError" in router.export()[0]["last_error"]
        assert federation.version(router.inventory, router.healthy()) is None
        await asyncio.to_thread(a.start)  # the same port again
        await eventually(lambda: router.export()[0]["state"] == "closed")
        assert router.choose("m") is not None
    finally:
        await poller.aclose()


async def test_sync_follows_backend_changes(sims: Callable[..., Sim]) -> None:
    a = sims("--models", "m")
    b = sims("--models", "m")
    router = Router([BackendRecord("a", a.url), BackendRecord("oai", "https://x.invalid", type="openai")])
    poller = poller_for(router)
    poller.sync()
    try:
        assert await poller.ready(5)
        router.set_backends([BackendRecord("b", b.url)])
        poller.sync()
        assert await poller.ready(5)
        assert router.inventory.holders("m:latest") == ("b",)
        seen_by_a = len(a.requests())
        poller.poke()
        await eventually(lambda: len([r for r in b.requests() if r["path"] == "/api/tags"]) >= 2)
        assert len(a.requests()) == seen_by_a  # a is no longer polled
    finally:
        await poller.aclose()


async def test_sick_backend_answering_500_is_taken_out(servers: list[Canned]) -> None:
    a = await serve(servers, models=["m"])
    router = Router([BackendRecord("a", a.url())], threshold=2, cool_down_s=0.2)
    poller = poller_for(router, health_interval_s=0.05)
    poller.sync()
    try:
        assert await poller.ready(5)
        a.status = 500
        await eventually(lambda: router.export()[0]["state"] == "open")
        assert "HTTP 500" in router.export()[0]["last_error"]
        a.status = 200
        await eventually(lambda: router.export()[0]["state"] == "closed")
    finally:
        await poller.aclose()


async def test_client_times_out_on_a_silent_backend(servers: list[Canned]) -> None:
    a = await serve(servers, hang=True)
    client = client_for(a.url(), timeout_s=0.2)
    with pytest.raises(BackendError, match=r"no answer within 0\.2s"):
        await client.get("/api/version")
    await client.aclose()


async def test_client_refuses_oversized_answers_and_sends_credential(servers: list[Canned]) -> None:
    a = await serve(servers, models=[f"m{i}" for i in range(50)])
    client = client_for(a.url() + "/", credential="s3cret")
    assert (await client.get("/api/version")).json() == {"version": "0.12.6"}
    with pytest.raises(BackendError, match="larger than 1000 bytes"):
        await client.get("/api/tags", max_body=1000)
    await client.aclose()


async def test_client_reconnects_when_a_kept_connection_was_closed(servers: list[Canned]) -> None:
    a = await serve(servers)
    client = client_for(a.url())
    assert (await client.get("/api/version")).status == 200
    for writer in list(a._writers):  # the backend drops the idle connection
        writer.close()
    await asyncio.sleep(0.05)
    assert (await client.get("/api/version")).status == 200
    assert a.connections == 2
    await client.aclose()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """The pair `fortress cert` writes, for 127.0.0.1: here it is both the server's and the CA bundle."""
    cert, key = cli_self_signed("127.0.0.1", days=1)
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return cert_path, key_path


async def test_https_backend_with_ca_bundle(servers: list[Canned], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    a = await Canned(models=["m"]).start(tls)
    servers.append(a)
    trusted = client_for(a.url("https"), ca_bundle=str(cert))
    assert (await trusted.get("/api/tags")).json()["models"][0]["name"] == "m"
    await trusted.aclose()
    untrusted = client_for(a.url("https"))
    with pytest.raises(BackendError, match="SSLCertVerificationError"):
        await untrusted.get("/api/version")
    await untrusted.aclose()
    router = Router([BackendRecord("a", a.url("https"), ca_bundle=str(cert))])
    poller = poller_for(router)
    poller.sync()
    try:
        assert await poller.ready(5)
        assert router.choose("m") is not None
    finally:
        await poller.aclose()
