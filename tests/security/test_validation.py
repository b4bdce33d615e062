"""Issue 5, stage 8 through the real proxy: Ollama-specific validation holds even for admin-scope keys.

Every refused request must stop at Fortress: the simulator's journal must not show it. The last tests
check per-key caps by reading the bodies a recording backend received.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress
from tests.security.conftest import assert_serving, auth, connect, head, read_all, send_raw
from tests.security.recorder import recorder

HEX = "a" * 64
# Request targets httpx would normalise away: sent byte for byte.
BAD_BLOB_PATHS = [
    "/api/blobs/sha256:../../../../etc/passwd",
    "/api/blobs/../../../etc/passwd",
    "/api/blobs/sha256%3A..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/blobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/blobs/sha256:..%5c..%5cwindows",
    "/api/blobs/sha256:" + "g" * 64,
    "/api/blobs/sha256:" + "A" * 64,
    "/api/blobs/sha256-" + HEX,
    "/api/blobs/sha256:" + HEX[:63],
    "/api/blobs/sha256:" + HEX + "%00",
]

# (route, body, status) refused even for an admin-scope key.
BAD_BODIES: list[tuple[str, dict, int]] = [
    ("/api/pull", {"model": "evil.example/ns/model"}, 403),
    ("/api/pull", {"model": "http://evil.example/rogue/x"}, 400),
    ("/api/pull", {"name": "evil.example:5000/rogue/x"}, 403),
    ("/api/pull", {"model": "evil.example/ns/model", "insecure": True}, 403),
    ("/api/pull", {"model": "llama3.2", "insecure": "yes"}, 400),
    ("/api/pull", {"model": "llama3.2", "name": "evil.example/ns/m"}, 403),
    ("/api/push", {"model": "evil.example/ns/stolen"}, 403),
    ("/api/push", {"model": "evil.example/library/llama3.2", "insecure": True}, 403),
    ("/api/copy", {"source": "llama3.2", "destination": "evil.example/ns/stolen"}, 403),
    ("/api/create", {"model": "../../escape", "from": "llama3.2"}, 400),
    ("/api/create", {"model": "ns/..", "from": "llama3.2"}, 400),
    ("/api/create", {"model": "x", "from": "evil.example/ns/model"}, 403),
    ("/api/create", {"model": "x", "path": "/etc/shadow"}, 400),
    ("/api/create", {"model": "x", "modelfile": "FROM /etc/passwd"}, 400),
    ("/api/create", {"model": "x", "files": {"../../etc/ld.so.preload": "sha256:" + HEX}}, 400),
    ("/api/create", {"model": "x", "files": {"m.gguf": "sha256:../../etc/passwd"}}, 400),
    ("/api/create", {"model": "x", "from": "gpt-oss:120b-cloud"}, 403),
    ("/api/create", {"model": "x", "from": "llama3.2", "remote_host": "https://ollama.com"}, 403),
    ("/api/pull", {"model": "gpt-oss:120b-cloud"}, 403),
    ("/api/generate", {"model": "gpt-oss:cloud", "prompt": "hi"}, 403),
    ("/api/chat", {"model": "deepseek-v3.1:671b-cloud", "messages": []}, 403),
    ("/api/show", {"model": "..\\..\\windows"}, 400),
    ("/v1/chat/completions", {"model": "qwen3-coder:480b-cloud", "messages": []}, 403),
]

MANAGEMENT = ("/api/blobs", "/api/pull", "/api/push", "/api/copy", "/api/create", "/api/delete", "/api/show")
WORK = ("/api/generate", "/api/chat", "/v1/")


def reached(sim: Sim, *prefixes: str) -> list[dict]:
    """What reached the backend on these routes (the inventory poller's GETs are not among them)."""
    return [q for q in sim.requests() if q["path"].startswith(prefixes)]


@pytest.mark.parametrize("path", BAD_BLOB_PATHS)
@pytest.mark.parametrize("method", ["HEAD", "POST"])
def test_bad_blob_digests_are_refused(
    gateway: Fortress, sim: Sim, admin_key: str, method: str, path: str
) -> None:
    sim.clear()
    reply = send_raw(gateway.port, head(method, path, admin_key, "Content-Length: 0", "Connection: close"))
    assert reply.status in (400, 404), reply.data[:300]
    assert not reached(sim, "/api/blobs", "/etc", "/..", "/%")


@pytest.mark.parametrize(("route", "body", "status"), BAD_BODIES, ids=lambda v: str(v)[:60])
def test_dangerous_bodies_are_refused_for_admin_keys(
    gateway: Fortress, sim: Sim, admin_key: str, route: str, body: dict, status: int
) -> None:
    sim.clear()
    r = httpx.post(f"{gateway.url}{route}", json=body, headers=auth(admin_key))
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert message["message"] if route.startswith("/v1/") else message
    assert not reached(sim, *MANAGEMENT, *WORK)


def test_zip_blob_upload_is_refused(gateway: Fortress, sim: Sim, admin_key: str) -> None:
    archive = b"PK\x03\x04" + b"\x00" * 26 + b"../../etc/ld.so.preload"
    digest = "sha256:" + hashlib.sha256(archive).hexdigest()
    assert_serving(gateway, admin_key)  # leaves a pooled backend connection ready to take the upload
    sim.clear()
    r = httpx.post(f"{gateway.url}/api/blobs/{digest}", content=archive, headers=auth(admin_key))
    assert r.status_code == 400 and "zip" in r.json()["error"]
    assert not reached(sim, "/api/blobs")
    assert httpx.head(f"{sim.url}/api/blobs/{digest}").status_code == 404  # nothing was stored


def test_split_zip_magic_is_refused(gateway: Fortress, sim: Sim, admin_key: str) -> None:
    archive = b"PK\x03\x04" + b"\x00" * 40
    digest = "sha256:" + hashlib.sha256(archive).hexdigest()
    sim.clear()
    with connect(gateway.port) as sock:
        sock.sendall(head("POST", f"/api/blobs/{digest}", admin_key, f"Content-Length: {len(archive)}"))
        time.sleep(0.1)
        sock.sendall(archive[:2])
        time.sleep(0.1)
        sock.sendall(archive[2:])
        reply = read_all(sock, 2.0)
    assert reply.status == 400 and b"zip" in reply.data
    assert not reached(sim, "/api/blobs")


def test_admin_key_may_pull_from_the_default_registry(gateway: Fortress, sim: Sim, admin_key: str) -> None:
    sim.clear()
    for name in ("tinyllama", "registry.ollama.ai/library/smollm:135m"):
        r = httpx.post(
            f"{gateway.url}/api/pull", json={"model": name, "stream": False}, headers=auth(admin_key)
        )
        assert r.status_code == 200 and r.json() == {"status": "success"}, r.text
    assert len(reached(sim, "/api/pull")) == 2
    digest = "sha256:" + hashlib.sha256(b"weights").hexdigest()
    up = httpx.post(f"{gateway.url}/api/blobs/{digest}", content=b"weights", headers=auth(admin_key))
    assert up.status_code == 201
    tiny = "sha256:" + hashlib.sha256(b"PK").hexdigest()  # shorter than the zip magic: still uploaded
    assert (
        httpx.post(f"{gateway.url}/api/blobs/{tiny}", content=b"PK", headers=auth(admin_key)).status_code
        == 201
    )
    empty = "sha256:" + hashlib.sha256(b"").hexdigest()
    assert (
        httpx.post(f"{gateway.url}/api/blobs/{empty}", content=b"", headers=auth(admin_key)).status_code
        == 201
    )


# -- per-key caps --------------------------------------------------------------------------------------


def test_per_key_caps_clamp_what_the_backend_receives(tmp_path: Path) -> None:
    with recorder() as backend:
        f = make_fortress(tmp_path, [("rec", backend.url)])
        f.serve()
        try:
            key = f.key(
                "capped", "--max-num-ctx", "2048", "--max-num-predict", "64", "--max-keep-alive", "5m"
            )
            greedy = {
                "model": "llama3.2",
                "prompt": "hi",
                "stream": False,
                "keep_alive": "24h",
                "options": {"num_ctx": 131072, "num_predict": 100000, "temperature": 0.5},
            }
            assert httpx.post(f"{f.url}/api/generate", json=greedy, headers=auth(key)).status_code == 200
            sent = backend.bodies[-1][1]
            assert sent["options"] == {"num_ctx": 2048, "num_predict": 64, "temperature": 0.5}
            assert sent["keep_alive"] == 300

            forever = {"model": "llama3.2", "messages": [], "stream": False, "keep_alive": -1}
            assert httpx.post(f"{f.url}/api/chat", json=forever, headers=auth(key)).status_code == 200
            path, sent = backend.bodies[-1]
            assert path == "/api/chat" and sent["keep_alive"] == 300
            assert sent["options"]["num_predict"] == 64  # omitted = unlimited for Ollama: the cap is added

            modest = {**greedy, "keep_alive": "1m", "options": {"num_ctx": 1024, "num_predict": 10}}
            assert httpx.post(f"{f.url}/api/generate", json=modest, headers=auth(key)).status_code == 200
            sent = backend.bodies[-1][1]
            assert sent["options"] == {"num_ctx": 1024, "num_predict": 10} and sent["keep_alive"] == "1m"

            oa = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}
            httpx.post(f"{f.url}/v1/chat/completions", json=oa, headers=auth(key))
            path, sent = backend.bodies[-1]
            assert path == "/v1/chat/completions" and sent["max_tokens"] == 64
        finally:
            f.stop()
