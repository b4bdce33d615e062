"""Issue 5: keys, passwords and backend credentials never show up in logs, error bodies or files.

One proxy at debug log level is driven through successes and every kind of failure that could echo a
secret; then everything a client saw, everything the processes printed and every file in the data
directory is searched for each secret.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import PY, ROOT, Sim, free_port, make_fortress, wait_port
from tests.security.conftest import auth, send_raw

ADMIN_PASSWORD = "correct horse battery"  # what tests/conftest.py's make_fortress sets
BACKEND_TOKEN = "bt-4f1c9e2d7a6b5c3e8f0a1b2c3d4e5f60"
URL_PASSWORD = "urlpass-9d8c7b6a5f4e"


def test_secrets_stay_out_of_logs_bodies_and_files(
    tmp_path: Path, sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORTRESS_TEST_BACKEND_TOKEN", BACKEND_TOKEN)
    dead = free_port()
    extra = (
        '[proxy]\nlog_level = "debug"\n'
        f'[[backends]]\nname = "paid"\nurl = "http://svc:{URL_PASSWORD}@127.0.0.1:{sim.port}"\n'
        'credential_env = "FORTRESS_TEST_BACKEND_TOKEN"\n'
        f'[[backends]]\nname = "dead"\nurl = "http://svc:{URL_PASSWORD}@127.0.0.1:{dead}"\n'
        'credential_env = "FORTRESS_TEST_BACKEND_TOKEN"\n'
    )
    f = make_fortress(tmp_path, [], extra)
    log_file = tmp_path / "proxy.log"
    # debug logs are chatty: a file, not a pipe nobody reads until the end (a full pipe stalls the proxy)
    with log_file.open("wb") as out:
        f.proc = subprocess.Popen(
            [PY, "-m", "fortress", "serve", "--config", str(f.config)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_port(f.port, f.proc)
    seen: list[str] = []  # every status line, header and body a client received
    cli_out: list[str] = []
    try:
        key = f.key("erin")
        admin = f.key("root", "--scope", "admin")
        wrong = key[: key.rindex("_") + 1] + "Z" * (len(key) - key.rindex("_") - 1)
        secrets = [key, key.split("_", 2)[2], admin.split("_", 2)[2], wrong.split("_", 2)[2]]

        def keep(r: httpx.Response) -> httpx.Response:
            seen.append(f"{r.status_code} {r.headers!r} {r.text}")
            return r

        sim.clear()
        body = {"model": "llama3.2", "prompt": "hi", "stream": False}
        assert keep(httpx.post(f"{f.url}/api/generate", json=body, headers=auth(key))).status_code == 200
        stream = keep(
            httpx.post(f"{f.url}/api/generate", json={**body, "stream": True}, headers={"X-API-Key": key})
        )
        assert stream.status_code == 200
        sent = [
            dict((k.lower(), v) for k, v in q["headers"]) for q in sim.requests() if q["method"] == "POST"
        ]
        assert sent and all(h.get("authorization") == f"Bearer {BACKEND_TOKEN}" for h in sent)
        assert all(key not in str(h) for h in sent)

        failures = [
            httpx.get(f"{f.url}/api/tags", headers=auth(wrong)),
            httpx.get(f"{f.url}/api/tags?api_key={key}"),
            httpx.get(f"{f.url}/v1/models", headers=auth(wrong)),
            httpx.post(f"{f.url}/api/pull", json={"model": "llama3.2"}, headers=auth(key)),
            httpx.post(f"{f.url}/api/generate", content=b"{not json", headers=auth(key)),
            httpx.post(f"{f.url}/api/generate", json={**body, "model": "missing"}, headers=auth(key)),
            httpx.get(f"{f.url}/api/tags", headers={"Authorization": f"Basic {key}"}),
            httpx.post(
                f"{f.url}/api/pull",
                json={"model": "llama3.2", "stream": False},
                headers={**auth(admin), "X-Fortress-Backend": "dead"},
            ),
            httpx.post(
                f"{f.url}/api/show",
                json={"model": "llama3.2"},
                headers={**auth(admin), "X-Fortress-Backend": "nope"},
            ),
        ]
        for r in failures:
            keep(r)
        codes = [r.status_code for r in failures]
        # with a dead backend around, an unknown model is 503 (its inventory is unknown), not 404
        assert codes == [401, 401, 401, 403, 400, 503, 401, 503, 404], codes
        assert "dead" in failures[7].json()["error"]
        raw = send_raw(
            f.port,
            f"POST /api/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(),
        )
        assert raw.status == 400
        seen.append(raw.data.decode("latin-1"))

        for args in (("key", "list"), ("backend", "list"), ("doctor",)):
            res = f.cli(*args, check=False)
            cli_out.append(res.stdout + res.stderr)
    finally:
        f.stop()
    logs = log_file.read_text(errors="replace")

    everything_seen = "\n".join(seen)
    for secret in (*secrets, BACKEND_TOKEN, URL_PASSWORD, ADMIN_PASSWORD):
        assert secret not in everything_seen, f"a client saw {secret[:6]}..."
        assert secret not in logs, f"the proxy logged {secret[:6]}..."
        for path in f.db.parent.iterdir():
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), (secret[:6], path.name)
    for secret in (*secrets, BACKEND_TOKEN, URL_PASSWORD, ADMIN_PASSWORD):
        assert secret not in "\n".join(cli_out), f"the CLI printed {secret[:6]}..."
    assert "svc:***@" in "\n".join(cli_out)  # the URL is shown, its password masked
    assert "DEBUG" in logs and "stopped" in logs  # the logs were really captured, to the end
