"""Model inventory routes: GET /api/tags, GET /api/ps, POST /api/show, DELETE /api/delete, POST /api/copy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fortress.sim import gojson, names
from fortress.sim.request import Refusal, Request
from fortress.sim.wire import Full

if TYPE_CHECKING:
    from fortress.sim.app import Simulator

NAME_FIELDS = {"model": "string", "name": "string"}
COPY_FIELDS = {"source": "string", "destination": "string"}


def requested_name(body: dict) -> str:
    """Ollama reads `model`, falling back to the older `name`."""
    return body.get("model") or body.get("name") or ""


def tags(sim: Simulator, req: Request) -> Full:
    return Full(200, sim.catalog.tags_body())


def ps(sim: Simulator, req: Request) -> Full:
    return Full(200, sim.catalog.ps_body())


def show(sim: Simulator, req: Request) -> Full:
    body = gojson.decode_struct(req.body, "api.ShowRequest", {**NAME_FIELDS, "verbose": "bool"})
    name = requested_name(body)
    if not name:
        raise Refusal(400, "model is required")
    model = sim.catalog.find(name)
    if model is None:
        raise Refusal(404, f"model '{name}' not found")
    return Full(200, sim.catalog.show_body(model))


def delete(sim: Simulator, req: Request) -> Full:
    body = gojson.decode_struct(req.body, "api.DeleteRequest", NAME_FIELDS)
    name = requested_name(body)
    if names.display_name(name) is None:
        raise Refusal(400, "invalid model name")
    model = sim.catalog.find(name)
    if model is None:
        raise Refusal(404, f"model '{name}' not found")
    sim.catalog.remove(model)
    return Full(200, b"", None)


def copy(sim: Simulator, req: Request) -> Full:
    body = gojson.decode_struct(req.body, "api.CopyRequest", COPY_FIELDS)
    source, destination = body.get("source") or "", body.get("destination") or ""
    if names.display_name(source) is None:
        raise Refusal(400, f'source "{source}" is invalid')
    if names.display_name(destination) is None:
        raise Refusal(400, f'destination "{destination}" is invalid')
    model = sim.catalog.find(source)
    if model is None:
        raise Refusal(404, f'model "{source}" not found')
    sim.catalog.install(destination, model.preset)
    return Full(200, b"", None)
