"""A loopback backend that keeps every request body it receives, for checks on what Fortress forwards.

The simulator journals heads only; clamping and the reading of bodies are about bodies. It answers the
inventory probes with one model so the router sends work to it, and every other request with a small
Ollama-shaped JSON reply. `raw` keeps each body byte for byte (duplicate keys and all).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.routing.helpers import ps, tags

MODEL = "llama3.2:latest"
MODELS = (MODEL, "mine-copy:latest")  # a second model, for copy and delete


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test output is for assertions."""

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        answers = {"/api/tags": tags(*MODELS), "/api/ps": ps(), "/api/version": {"version": "0.12.6"}}
        self._answer(answers.get(self.path, {}))

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(size)
        self.server.raw.append((self.path, raw))
        self.server.bodies.append((self.path, json.loads(raw or b"{}")))
        self._answer(
            {"model": MODEL, "response": "ok", "done": True, "prompt_eval_count": 1, "eval_count": 1}
        )

    do_DELETE = do_POST


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[tuple[str, dict]] = []
        self.raw: list[tuple[str, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
