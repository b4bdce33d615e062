"""The simulator's state and request dispatch: host check, routing, knobs, errors in the right shape."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fortress.sim import (
    anthropic,
    blobs,
    credentials,
    embeddings,
    generation,
    inventory,
    openai,
    probes,
    transfers,
)
from fortress.sim.catalog import Catalog
from fortress.sim.gojson import DecodeError
from fortress.sim.hostcheck import host_allowed, is_loopback_listener
from fortress.sim.journal import Journal
from fortress.sim.request import Refusal, Request
from fortress.sim.settings import KnobError, Settings, resolve
from fortress.sim.wire import TEXT, Full, Reply, anthropic_error, dumps, error, openai_error

Handler = Callable[["Simulator", Request], Reply]


@dataclass(frozen=True, slots=True)
class Route:
    """Handlers by method for one path; `family` picks the error shape, `hashes_body` streams uploads."""

    handlers: Mapping[str, Handler]
    family: str = "ollama"
    hashes_body: bool = False


ROUTES: dict[str, Route] = {
    "/": Route({"GET": probes.root, "HEAD": probes.root}, "probe"),
    "/api/version": Route({"GET": probes.version, "HEAD": probes.version}, "probe"),
    "/api/status": Route({"GET": probes.status}, "probe"),
    "/api/tags": Route({"GET": inventory.tags, "HEAD": inventory.tags}, "probe"),
    "/api/ps": Route({"GET": inventory.ps}, "probe"),
    "/api/show": Route({"POST": inventory.show}),
    "/api/delete": Route({"DELETE": inventory.delete}),
    "/api/copy": Route({"POST": inventory.copy}),
    "/api/generate": Route({"POST": generation.generate}),
    "/api/chat": Route({"POST": generation.chat}),
    "/api/embed": Route({"POST": embeddings.embed}),
    "/api/embeddings": Route({"POST": embeddings.embeddings}),
    "/api/pull": Route({"POST": transfers.pull}),
    "/api/push": Route({"POST": transfers.push}),
    "/api/create": Route({"POST": transfers.create}),
    "/v1/chat/completions": Route({"POST": openai.chat_completions}, "openai"),
    "/v1/completions": Route({"POST": openai.completions}, "openai"),
    "/v1/embeddings": Route({"POST": openai.embeddings}, "openai"),
    "/v1/responses": Route({"POST": openai.responses}, "openai"),
    "/v1/models": Route({"GET": openai.models}, "openai"),
    "/v1/messages": Route({"POST": anthropic.messages}, "anthropic"),
    "/_sim/requests": Route({"GET": probes.journal, "DELETE": probes.clear_journal}, "sim"),
}
PREFIXED: tuple[tuple[str, Route], ...] = (
    ("/api/blobs/", Route({"HEAD": blobs.head_blob, "POST": blobs.post_blob}, hashes_body=True)),
    ("/v1/models/", Route({"GET": openai.model}, "openai")),
)
RENDER: dict[str, Callable[[int, str], Full]] = {"openai": openai_error, "anthropic": anthropic_error}
NOT_FOUND = Full(404, b"404 page not found", TEXT)
NOT_ALLOWED = Full(405, b"405 method not allowed", TEXT)
FORBIDDEN = Full(403, b"", None)
NO_CONTENT = Full(204, b"", None)
_UNROUTED = Route({})


def find_route(path: str) -> tuple[Route, str]:
    """The route for a path and the path tail it captures ('' for fixed paths)."""
    route = ROUTES.get(path)
    if route is not None:
        return route, ""
    for prefix, candidate in PREFIXED:
        if path.startswith(prefix) and len(path) > len(prefix) and "/" not in path[len(prefix) :]:
            return candidate, path[len(prefix) :]
    return _UNROUTED, ""


class Simulator:
    """Everything one simulator process knows: settings, models, blobs, the request journal."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog.from_names(list(settings.models), list(settings.loaded))
        self.blobs: set[str] = set()
        self.journal = Journal()
        self.check_host = is_loopback_listener(settings.host)
        self.version_reply = Full(200, dumps({"version": settings.version}))
        self.base_path = settings.base_path + "/" if settings.base_path != "/v1" else ""

    def prepare(self, req: Request) -> Route:
        """Called once the head is parsed: resolve the route (its captured tail goes to req.param).

        With --base-path B, `B/x` is served as `/v1/x` (providers put their API under many paths).
        """
        path = req.path
        if self.base_path and path.startswith(self.base_path):
            path = "/v1/" + path[len(self.base_path) :]
        route, req.param = find_route(path)
        return route

    def handle(self, req: Request, route: Route) -> Reply:
        """The reply for a complete request; sets req.knobs for the protocol's pacing and faults."""
        if self.check_host and route.family != "sim" and not host_allowed(req.lower.get("host", "")):
            return FORBIDDEN
        if req.method == "OPTIONS":
            return NO_CONTENT  # Ollama's Host middleware answers every accepted OPTIONS itself
        handler = route.handlers.get(req.method)
        if handler is None:
            return NOT_ALLOWED if route.handlers else NOT_FOUND
        render = RENDER.get(route.family, error)
        if route.family in RENDER:
            unauthorised = credentials.refusal(self.settings.api_key, req, route.family)
            if unauthorised is not None:
                return unauthorised
        try:
            req.knobs = resolve(self.settings, req.lower, req.method in ("POST", "DELETE"))
        except KnobError as refused:
            return render(400, str(refused))
        if req.knobs.fail_status is not None and route.family != "sim":
            return render(req.knobs.fail_status, "simulated failure (fortress sim)")
        try:
            return handler(self, req)
        except Refusal as refused:
            return render(refused.status, refused.message)
        except DecodeError as refused:
            message = str(refused)
            if message == "EOF" and route.family == "ollama":
                message = "missing request body"
            return render(400, message)
