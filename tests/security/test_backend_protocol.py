"""A backend that breaks HTTP (two responses to one request) must not leak the extra bytes to the client:
the first response ends at its declared Content-Length and the connection is dropped."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.conftest import make_fortress
from tests.security.recorder import Recorder, _Handler

ONE = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"done":true}'
SMUGGLED = b"HTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 9\r\n\r\nsmuggled!"


class _TwoAnswers(_Handler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.wfile.write(ONE + SMUGGLED)  # one write: both responses reach the proxy together


def test_a_second_unsolicited_response_is_dropped_with_the_connection(tmp_path: Path) -> None:
    server = Recorder()
    server.RequestHandlerClass = _TwoAnswers
    threading.Thread(target=server.serve_forever, daemon=True).start()
    f = make_fortress(tmp_path, [("bad", server.url)])
    f.serve()
    try:
        key = f.key()
        with httpx.Client() as client:
            r = client.post(
                f"{f.url}/api/generate",
                json={"model": "llama3.2", "prompt": "x", "stream": False},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == 200 and r.content == b'{"done":true}'
            assert "x-injected" not in r.headers and b"smuggled" not in r.content
            follow = client.get(f"{f.url}/")  # the next answer on this client is Fortress's own, unpolluted
            assert follow.status_code == 200 and follow.text == "Ollama is running"
    finally:
        f.stop()
        server.shutdown()
        server.server_close()
