"""Fixtures: the real `fortress` command run as a subprocess against a temporary config and database,
and a tiny loopback stand-in for an Ollama server's /api/version."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeOllama:
    """Answers GET /api/version like Ollama and remembers the Authorization headers it saw."""

    url: str
    authorizations: list[str] = field(default_factory=list)


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            body = json.dumps({"version": "0.12.3"}).encode() if self.path == "/api/version" else b"{}"
            self.send_response(200 if self.path == "/api/version" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield FakeOllama(f"http://127.0.0.1:{server.server_address[1]}", seen)
    server.shutdown()
    server.server_close()


@dataclass
class Fortress:
    """A temporary installation: config.toml, data/ beside it, and a way to run commands."""

    root: Path
    env: dict[str, str]
    backend_url: str

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def db_path(self) -> Path:
        return self.root / "data" / "fortress.db"

    def configure(self, proxy_lines: str = "") -> None:
        """Write config.toml: the database under ./data and one backend, the fake Ollama."""
        self.config.write_text(
            f'[proxy]\n{proxy_lines}\n[database]\npath = "./data/fortress.db"\n\n'
            f'[[backends]]\nname = "local"\nurl = "{self.backend_url}"\n'
        )

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fortress", *args, "--config", str(self.config)],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.root,
            env={**self.env, **(env or {})},
            timeout=60,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        res = self.run(*args, stdin=stdin)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res.stdout

    def query(self, sql: str, *params: object) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.db_path)) as conn:
            return conn.execute(sql, params).fetchall()

    def db_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.db_path.parent.glob("fortress.db*"))


@pytest.fixture
def fortress(tmp_path: Path, fake_ollama: FakeOllama) -> Fortress:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORTRESS_")}
    env["PYTHONPATH"] = str(REPO)
    f = Fortress(tmp_path, env, fake_ollama.url)
    f.configure()
    return f
