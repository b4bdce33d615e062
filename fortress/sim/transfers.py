"""Registry-style routes with progress streams: POST /api/pull, /api/push and /api/create."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

from fortress.sim import gojson, names
from fortress.sim.catalog import Preset, preset_for
from fortress.sim.inventory import requested_name
from fortress.sim.request import Refusal, Request
from fortress.sim.wire import NDJSON, Full, Reply, Stream, dumps, error

if TYPE_CHECKING:
    from fortress.sim.app import Simulator

PULL_FIELDS = {"model": "string", "name": "string", "insecure": "bool", "stream": "*bool"}
CREATE_FIELDS = {
    "model": "string",
    "from": "string",
    "files": "map[string]string",
    "adapters": "map[string]string",
    "template": "string",
    "system": "string",
    "parameters": "map[string]interface {}",
    "messages": "[]api.Message",
    "quantize": "string",
    "stream": "*bool",
}
MISSING_MANIFEST = "pull model manifest: file does not exist"
DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
_SMALL_LAYERS = (("template", 1429), ("license", 7711), ("params", 96))
_PROGRESS_STEPS = 4

Lines = Generator[dict, None, bool]


def layers(display: str, preset: Preset) -> list[tuple[str, int]]:
    """(hex digest, size) of a model's blobs; derived from the name so every run agrees."""
    parts = (("model", preset.size), *_SMALL_LAYERS)
    return [(hashlib.sha256(f"{display}/{part}".encode()).hexdigest(), size) for part, size in parts]


def _transfer(verb: str, display: str, preset: Preset) -> Iterator[dict]:
    """'pulling <12hex>' / 'pushing <12hex>' lines; Go omits `completed` while it is 0."""
    for digest, size in layers(display, preset):
        steps = _PROGRESS_STEPS if size > 1 << 20 else 1
        for step in range(steps + 1):
            line = {"status": f"{verb} {digest[:12]}", "digest": f"sha256:{digest}", "total": size}
            if step:
                line["completed"] = size * step // steps
            yield line


def _fetch(display: str, preset: Preset) -> Lines:
    """Download progress; False (after an error line) when the registry has no such model."""
    yield {"status": "pulling manifest"}
    if "doesnotexist" in display.lower():
        yield {"error": MISSING_MANIFEST}
        return False
    yield from _transfer("pulling", display, preset)
    yield {"status": "verifying sha256 digest"}
    return True


def progress(lines: Iterator[dict], body: dict, interval_s: float) -> Reply:
    """Stream the lines (default), or with stream:false answer the last one (an error becomes a 500)."""
    if body.get("stream") is not False:
        return Stream(NDJSON, (dumps(line) + b"\n" for line in lines), interval_s)
    last: dict = {}
    for last in lines:  # noqa: B007 - only the final line is answered
        pass
    return error(500, last["error"]) if "error" in last else Full(200, dumps(last))


def _display(name: str) -> str:
    display = names.display_name(name) if name else None
    if display is None:
        raise Refusal(400, "invalid model name")
    return display


def pull(sim: Simulator, req: Request) -> Reply:
    body = gojson.decode_struct(req.body, "api.PullRequest", PULL_FIELDS)
    display = _display(requested_name(body))
    preset = preset_for(display)

    def lines() -> Iterator[dict]:
        if (yield from _fetch(display, preset)):
            yield {"status": "writing manifest"}
            sim.catalog.install(display, preset)
            yield {"status": "success"}

    return progress(lines(), body, req.knobs.interval_s)


def push(sim: Simulator, req: Request) -> Reply:
    body = gojson.decode_struct(req.body, "api.PushRequest", PULL_FIELDS)
    name = requested_name(body)
    model = sim.catalog.find(_display(name))
    if model is None:
        raise Refusal(404, f"model '{name}' not found")

    def lines() -> Iterator[dict]:
        yield {"status": "retrieving manifest"}
        yield from _transfer("pushing", model.name, model.preset)
        yield {"status": "pushing manifest"}
        yield {"status": "success"}

    return progress(lines(), body, req.knobs.interval_s)


def _file_digests(sim: Simulator, files: dict) -> list[str]:
    """Validate `files` ({relative path: digest}) against the blob store; lower-case hex digests."""
    digests = []
    for path, digest in files.items():
        if not path or path.startswith("/") or "\\" in path or ".." in path.split("/"):
            raise Refusal(400, "file path must be relative")
        match = DIGEST.fullmatch(str(digest))
        if match is None:
            raise Refusal(400, "invalid digest format")
        hexdigest = match.group(1).lower()
        if hexdigest not in sim.blobs:
            raise Refusal(400, f"blob sha256:{hexdigest} not found")
        digests.append(hexdigest)
    return digests


def create(sim: Simulator, req: Request) -> Reply:
    body = gojson.decode_struct(req.body, "api.CreateRequest", CREATE_FIELDS)
    display = _display(requested_name(body))
    source_name, files = body.get("from") or "", body.get("files") or {}
    if not source_name and not files:
        raise Refusal(400, "neither 'from' or 'files' was specified")
    file_digests = _file_digests(sim, files)
    source = sim.catalog.find(source_name) if source_name else None
    preset = source.preset if source else preset_for(source_name or display)
    extras = [key for key in ("template", "system", "parameters", "messages", "license") if body.get(key)]

    def lines() -> Iterator[dict]:
        if source_name and source is None and not (yield from _fetch(_display(source_name), preset)):
            return
        if file_digests:
            yield {"status": "parsing GGUF"}
        reused = file_digests or [digest for digest, _ in layers(source_name or display, preset)]
        for digest in reused:
            yield {"status": f"using existing layer sha256:{digest}"}
        for key in extras:
            digest = hashlib.sha256(f"{display}/{key}".encode()).hexdigest()
            yield {"status": f"creating new layer sha256:{digest}"}
        yield {"status": "writing manifest"}
        sim.catalog.install(display, preset)
        yield {"status": "success"}

    return progress(lines(), body, req.knobs.interval_s)
