"""Stand-ins for Fortress's web search sources, for tests: a SearXNG instance and ollama.com's web search.

    python -m fortress.sim.searxng --port 0 --ready-file /tmp/ws.ready [--api-key KEY] [--results N]
                                   [--no-json] [--engines-fail]

One small threaded HTTP server answers both, with deterministic results derived from the query:
- `GET|POST /search?q=...&format=json`: SearXNG's JSON answer (`query`, `results` with `url`, `title`,
  `content`, `engine`, `engines`, `template`, `parsed_url`, `positions`, `score`, `category`...,
  `answers`, `corrections`, `infoboxes`, `suggestions`, `unresponsive_engines`), as searx/webutils.py
  builds it. Without `q`: 400 `{"error": "No query"}`; `--no-json` (json not in search.formats): 403
  with an HTML body, as SearXNG; `--engines-fail`: no results and every engine listed unresponsive.
- `POST /api/web_search {"query", "max_results"}`: ollama.com's answer `{"results": [{"title", "url",
  "content"}]}` (max_results default 5, at most 10); with `--api-key`, any other bearer gets 401
  `{"error": "unauthorized"}`.
- `POST /api/web_fetch {"url"}`: ollama.com's `{"title", "content", "links"}` for a canned page.
- `GET /_sim/requests` lists what was asked (method, path, query, body, `auth`: none|ok|wrong; never
  the key itself); `DELETE /_sim/requests` clears it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fortress.sim.server import _write_ready_file

ENGINES = ("duckduckgo", "wikipedia", "brave")


def searxng_answer(query: str, count: int, engines_fail: bool) -> dict[str, Any]:
    """What SearXNG's `format=json` gives for `query` (deterministic)."""
    if engines_fail:
        failed = [[name, "timeout"] for name in ENGINES]
        return _searxng_body(query, [], failed)
    slug = quote(query.lower().replace(" ", "-"), safe="-")
    results = []
    for i in range(count):
        engine = ENGINES[i % len(ENGINES)]
        host = f"www.{engine}.example"
        path = f"/{slug}/{i + 1}"
        results.append(
            {
                "url": f"https://{host}{path}",
                "title": f"{query} - result {i + 1}",
                "content": f"What {engine} knows about {query}, part {i + 1}.",
                "engine": engine,
                "template": "default.html",
                "parsed_url": ["https", host, path, "", "", ""],
                "img_src": "",
                "thumbnail": "",
                "priority": "",
                "engines": [engine],
                "positions": [i + 1],
                "score": round(1.0 / (i + 1), 4),
                "category": "general",
                "publishedDate": None,
            }
        )
    return _searxng_body(query, results, [])


def _searxng_body(query: str, results: list[dict[str, Any]], failed: list[list[str]]) -> dict[str, Any]:
    return {
        "query": query,
        "results": results,
        "answers": [],
        "corrections": [],
        "infoboxes": [],
        "suggestions": [f"{query} tutorial"],
        "unresponsive_engines": failed,
    }


def hosted_answer(query: str, count: int) -> dict[str, Any]:
    """What ollama.com's /api/web_search gives for `query` (deterministic)."""
    slug = quote(query.lower().replace(" ", "-"), safe="-")
    return {
        "results": [
            {
                "title": f"{query} (hosted {i + 1})",
                "url": f"https://hosted.example/{slug}/{i + 1}",
                "content": f"ollama.com's snippet {i + 1} about {query}.",
            }
            for i in range(count)
        ]
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read /_sim/requests instead
        pass

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_DELETE(self) -> None:
        self._route()

    def _route(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if parts.path == "/_sim/requests":
            if self.command == "DELETE":
                self.server.clear()
                return self._send(200, {})
            return self._send(200, self.server.recorded())
        form = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if self.command == "POST" and self.headers.get("Content-Type", "").startswith("application/x-www"):
            form.update({k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()})
        body: Any = None
        if raw and self.headers.get("Content-Type", "").startswith("application/json"):
            try:
                body = json.loads(raw)
            except ValueError:
                return self._send(400, {"error": "invalid JSON"})
        auth = self._auth()
        self.server.record(
            {"method": self.command, "path": parts.path, "query": form, "body": body, "auth": auth}
        )
        if parts.path == "/search" and self.command in ("GET", "POST"):
            return self._search(form)
        if parts.path in ("/api/web_search", "/api/web_fetch") and self.command == "POST":
            if auth != "ok" and self.server.api_key:
                return self._send(401, {"error": "unauthorized"})
            return self._hosted(parts.path, body if isinstance(body, dict) else {})
        return self._send(404, "404 page not found", content_type="text/plain")

    def _auth(self) -> str:
        header = self.headers.get("Authorization")
        if header is None:
            return "none"
        return "ok" if header == f"Bearer {self.server.api_key}" else "wrong"

    def _search(self, form: dict[str, str]) -> None:
        output = form.get("format", "html")
        if output == "json" and self.server.no_json:
            return self._send(403, "<html><body><h1>Forbidden</h1></body></html>", content_type="text/html")
        if output != "json":
            return self._send(200, "<html><body>SearXNG stand-in</body></html>", content_type="text/html")
        query = form.get("q", "")
        if not query:
            return self._send(400, {"error": "No query"})
        self._send(200, searxng_answer(query, self.server.results, self.server.engines_fail))

    def _hosted(self, path: str, body: dict[str, Any]) -> None:
        if path == "/api/web_fetch":
            url = body.get("url")
            if not isinstance(url, str) or not url:
                return self._send(400, {"error": "url is required"})
            return self._send(
                200, {"title": "Hosted page", "content": f"The page at {url}.", "links": [f"{url}/more"]}
            )
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            return self._send(400, {"error": "query is required"})
        count = body.get("max_results") or 5
        if not isinstance(count, int) or count < 1:
            return self._send(400, {"error": "max_results must be a positive integer"})
        self._send(200, hosted_answer(query, min(count, 10)))

    def _send(self, status: int, payload: Any, content_type: str = "application/json; charset=utf-8") -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], args: argparse.Namespace) -> None:
        super().__init__(address, _Handler)
        self.api_key: str = args.api_key
        self.results: int = args.results
        self.no_json: bool = args.no_json
        self.engines_fail: bool = args.engines_fail
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(entry)

    def recorded(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fortress.sim.searxng", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888, help="0 picks a free one (see --ready-file)")
    parser.add_argument("--ready-file", default="", help="write the base URL here once listening")
    parser.add_argument("--api-key", default="", help="the bearer /api/web_search requires (default: any)")
    parser.add_argument("--results", type=int, default=8, help="SearXNG results per query")
    parser.add_argument("--no-json", action="store_true", help="answer format=json with 403, as SearXNG")
    parser.add_argument("--engines-fail", action="store_true", help="no results, every engine unresponsive")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        server = _Server((args.host, args.port), args)
    except OSError as error:
        print(f"searxng stand-in: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}"
    if args.ready_file:
        _write_ready_file(args.ready_file, url)
    print(f"searxng stand-in listening on {url}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
