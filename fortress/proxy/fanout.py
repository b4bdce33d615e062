"""`X-Fortress-Backend: *` on /api/pull and /api/delete: one request to every healthy Ollama backend.

Only for admin-scope keys (the protocol passes the header on for those alone). The answers merge:
- a progress stream (pull, Ollama's default): every backend's NDJSON lines as they arrive, each with
  a `"backend"` field first; a backend that cannot be reached or refuses adds one
  `{"backend": name, "error": ...}` line; the last line has no `"backend"` and gives the outcome,
  `{"status": "success", "backends": [names]}` or `{"error": "<what failed where>"}`;
- one JSON object (delete, or pull with `"stream": false`) once every backend answered:
  `{"status": "success", "backends": [{"backend": name, "code": 200, ...its answer's fields}]}`, or
  on any failure `{"error": ..., "backends": [...]}` with the highest status among the backends.
Model management is rare and its answers are small, so this path parses each line as JSON and talks
to each backend through the one control client (fortress/backends/client.py) on a fresh connection;
the hot path's pool and raw relay are left alone.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fortress.backends.client import BackendClient, BackendError, Response
from fortress.http import replies
from fortress.routing.health import answered

if TYPE_CHECKING:
    from fortress.backends.target import Target
    from fortress.proxy.exchange import Exchange

ALL = "*"
ROUTES = frozenset(("/api/pull", "/api/delete"))
_MAX_LINE = 1 << 20  # a progress line is ~200 bytes; anything this long is not Ollama talking


# -- pure: what goes to the client -------------------------------------------------------------------
@dataclass(slots=True)
class Outcome:
    """One backend's answer: HTTP status (502/504 when unreachable), its last JSON object, and that line
    as the backend sent it (`tail`, for the breaker's rule: routing/health.answered)."""

    backend: str
    code: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    tail: bytes = b""

    @property
    def failed(self) -> bool:
        return not 200 <= self.code < 300 or "error" in self.last

    def describe(self) -> str:
        return f"{self.backend}: {self.last.get('error') or f'HTTP {self.code}'}"


def parse_line(line: bytes) -> dict[str, Any]:
    """A backend's line as an object; text that is not a JSON object becomes an error object."""
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        return obj
    return {"error": line.decode("utf-8", "replace").strip()[:500] or "empty answer"}


def tagged(backend: str, obj: dict[str, Any]) -> bytes:
    """The line as relayed: the backend's name first, then the backend's own fields."""
    row: dict[str, Any] = {"backend": backend}
    row.update((k, v) for k, v in obj.items() if k != "backend")
    return json.dumps(row).encode() + b"\n"


def summary(outcomes: list[Outcome]) -> tuple[int, dict[str, Any]]:
    """The overall status and the fields every merged answer ends with."""
    failed = [o for o in outcomes if o.failed]
    if not failed:
        return 200, {"status": "success"}
    status = max(o.code if o.code >= 400 else 502 for o in failed)
    detail = "; ".join(o.describe() for o in failed)
    return status, {"error": f"failed on {len(failed)} of {len(outcomes)} backends: {detail}"}


def final_line(outcomes: list[Outcome]) -> bytes:
    """The last line of a merged stream."""
    _, end = summary(outcomes)
    if "status" in end:
        end["backends"] = [o.backend for o in outcomes]
    return json.dumps(end).encode() + b"\n"


def merged_body(outcomes: list[Outcome]) -> tuple[int, bytes]:
    """The one object of a merged non-stream answer, with its status."""
    status, end = summary(outcomes)
    rows = [{"backend": o.backend, "code": o.code, **o.last} for o in outcomes]
    return status, json.dumps({**end, "backends": rows}).encode()


def wants_stream(route: str, body: bytes | None) -> bool:
    """Pull streams unless the body says "stream": false; delete never streams."""
    if route != "/api/pull":
        return False
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return True
    return not (isinstance(doc, dict) and doc.get("stream") is False)


# -- I/O: every backend through the one control client ------------------------------------------------
class FanOut:
    """One merged request; `run()` is the task the exchange starts and cancels if the client leaves."""

    def __init__(self, ex: Exchange, names: list[str]) -> None:
        self.ex = ex
        self.names = names
        self.stream = wants_stream(ex.admit.route.name, ex.body)
        self.head_sent = False

    async def run(self) -> None:
        ex, w = self.ex, self.ex.w
        for name in self.names:
            w.router.started(name)
        outcomes = await asyncio.gather(*(self._one(w.targets[name]) for name in self.names))
        for name in self.names:
            w.poller.poke(name)  # what these backends hold has changed
        ex.stream = self.stream
        if self.stream:
            self._emit(final_line(outcomes))
            status, end = summary(outcomes)
            ex.finish(status, end.get("error"))
        else:
            status, body = merged_body(outcomes)
            reply = replies.LocalReply(status, body, headers=ex.admit.rate_headers)
            ex.reply(reply, summary(outcomes)[1].get("error"))

    async def _one(self, target: Target) -> Outcome:
        """Send to one backend and relay (stream) or keep (non-stream) what it answers."""
        ex = self.ex
        outcome = Outcome(target.name)
        routing = ex.w.routing
        client = BackendClient(
            target, timeout_s=routing.connect_timeout_s + routing.first_byte_timeout_s, keep_alive=False
        )
        headers = _pairs(ex.fwd_headers)
        headers.append((b"X-Request-ID", ex.request_id))
        works = True  # what the breaker hears: only a backend failing as a server counts against it
        try:
            async with client.stream(
                ex.method.decode(), ex.target_url.decode("latin-1"), ex.body, headers, routing.idle_timeout_s
            ) as response:
                outcome.code = response.status
                await self._read(response, outcome)
            works = answered(outcome.code, (outcome.tail,))
        except BackendError as exc:
            works = False
            outcome.code = outcome.code or (504 if exc.timeout else 502)
            reason = "did not answer in time" if exc.timeout else f"failed: {exc.reason}"
            self._line(outcome, {"error": f"backend {target.name} {reason}"})
        finally:
            await client.aclose()
            ex.w.finished(target.name, works, outcome.last.get("error", ""))
        return outcome

    async def _read(self, response: Response, outcome: Outcome) -> None:
        """The answer's NDJSON lines as they complete (a stream) or its last object (non-stream)."""
        rest = b""
        async for piece in response.pieces():
            *lines, rest = (rest + piece).split(b"\n")
            if len(rest) > _MAX_LINE:
                raise BackendError(response.what, "sent an overlong line")
            for line in lines:
                if line.strip():
                    outcome.tail = line
                    self._line(outcome, parse_line(line))
        if rest.strip() or not outcome.last:
            outcome.tail = rest
            self._line(outcome, parse_line(rest) if rest.strip() else {})

    def _line(self, outcome: Outcome, obj: dict[str, Any]) -> None:
        outcome.last = obj
        if self.stream and obj:
            self._emit(tagged(outcome.backend, obj))

    def _emit(self, line: bytes) -> None:
        """One line to the client; the response head goes first, once."""
        ex = self.ex
        if not self.head_sent:
            self.head_sent = True
            ex.begin(200, b"application/x-ndjson")
        ex.emit(line)


def _pairs(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Forwarded header lines ("Name: value\\r\\n", some entries holding several) as (name, value)."""
    pairs = []
    for line in b"".join(lines).split(b"\r\n"):
        name, _, value = line.partition(b": ")
        if name:
            pairs.append((name, value))
    return pairs


def start(ex: Exchange) -> None:
    """Begin a fan-out for the exchange, or answer at once why it cannot run."""
    if ex.route.name not in ROUTES:
        ex.fail(400, "X-Fortress-Backend: * applies only to /api/pull and /api/delete")
        return
    w = ex.w
    healthy = w.router.healthy()
    names = [name for name, t in w.targets.items() if t.kind.manages_models and name in healthy]
    if not names:
        ex.fail(503, "no healthy backend is available")
        return
    ex.answered_by(w.loop.create_task(FanOut(ex, names).run()))
