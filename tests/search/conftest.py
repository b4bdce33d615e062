"""Fixtures: the web search stand-ins as a real process, and a tiny HTTP server for web_fetch targets."""

from __future__ import annotations

import contextlib
import gzip
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import PY, ROOT, free_port, stop


@dataclass
class Stand:
    """`python -m fortress.sim.searxng`: SearXNG and ollama.com's web search in one process."""

    url: str
    proc: subprocess.Popen

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/_sim/requests").json()


def start_stand(directory: Path, *flags: str) -> Stand:
    """A stand-in process (its ready file in `directory`); stop it with `stop(stand.proc)`."""
    ready = directory / f"ws-{time.monotonic_ns()}.ready"
    argv = [PY, "-m", "fortress.sim.searxng", "--port", "0", "--ready-file", str(ready), *flags]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, stop(proc)
        time.sleep(0.02)
    return Stand(ready.read_text().strip(), proc)


@pytest.fixture
def stand(tmp_path: Path) -> Iterator[Callable[..., Stand]]:
    started: list[Stand] = []

    def start(*flags: str) -> Stand:
        started.append(start_stand(tmp_path, *flags))
        return started[-1]

    yield start
    for s in started:
        stop(s.proc)


def dead_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


PAGE = b"""<!doctype html><html><head><title>The  Page</title>
<script>document.write("<p>not text</p>")</script><style>p{color:red}</style></head>
<body><h1>Welcome</h1><p>First paragraph with a <a href="/other.html#top">relative link</a>.</p>
<p>Second &amp; last: <a href="https://example.org/x">absolute</a> <a href="mailto:a@b.c">mail</a>
<a href="javascript:alert(1)">js</a></p></body></html>"""


@dataclass
class Pages:
    """A loopback web server for web_fetch: pages, redirects (into private ranges too), bombs."""

    port: int
    hosts: list[str] = field(default_factory=list)  # Host headers received
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def pages() -> Iterator[Pages]:
    state = Pages(0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.hosts.append(self.headers.get("Host", ""))
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            path = parts.path
            if path == "/page.html":
                self.reply(200, PAGE, "text/html; charset=utf-8")
            elif path == "/plain.txt":
                self.reply(200, b"  just text\n", "text/plain")
            elif path == "/latin1.html":
                self.reply(
                    200,
                    "<title>Caf\u00e9</title><p>na\u00efve</p>".encode("latin-1"),
                    "text/html; charset=iso-8859-1",
                )
            elif path == "/meta-charset.html":
                body = '<meta charset="windows-1252"><p>\u20ac5</p>'.encode("windows-1252")
                self.reply(200, body, "text/html")
            elif path == "/image.png":
                self.reply(200, b"\x89PNG\r\n\x1a\n", "image/png")
            elif path == "/big.html":
                self.reply(200, b"<p>" + b"a" * (1 << 20) + b"</p>", "text/html")
            elif path == "/bomb.html":
                self.reply(
                    200, gzip.compress(b"<p>" + b"0" * (32 << 20)), "text/html", ("Content-Encoding", "gzip")
                )
            elif path == "/brotli.html":
                self.reply(200, b"x", "text/html", ("Content-Encoding", "br"))
            elif path == "/echo-host":
                self.reply(200, self.headers.get("Host", "").encode(), "text/plain")
            elif path == "/redirect":
                self.reply(int(query.get("status", "302")), b"", "text/html", ("Location", query["to"]))
            elif path == "/no-location":
                self.reply(302, b"", "text/html")
            elif path == "/loop":
                self.reply(302, b"", "text/html", ("Location", "/loop"))
            elif path == "/missing":
                self.reply(404, b"not here", "text/plain")
            elif path == "/slow":
                state.release.wait(30)
                self.reply(200, b"late", "text/plain")
            else:
                self.reply(404, b"", "text/plain")

        def reply(self, status: int, body: bytes, ctype: str, *headers: tuple[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(OSError):  # the client stopped reading (size cap): fine
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
