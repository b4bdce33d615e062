"""Command line and listener of the simulator: `python -m fortress.sim` / `fortress sim`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import uvloop

from fortress.signals import stop_event
from fortress.sim import names
from fortress.sim.app import Simulator
from fortress.sim.catalog import DEFAULT_MODELS
from fortress.sim.protocol import SimProtocol
from fortress.sim.settings import Settings
from fortress.sim.wire import Responder


def _model_list(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    for item in items:
        if names.display_name(item) is None:
            raise argparse.ArgumentTypeError(f"invalid model name {item!r}")
    return items


def _base_path(text: str) -> str:
    path = "/" + text.strip("/")
    if path == "/" or any(c in path for c in "?#% "):
        raise argparse.ArgumentTypeError(f"invalid base path {text!r}: expected e.g. /v1 or /api/v1")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fortress sim", description="A fast Ollama simulator.")
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="listen address (Host checks apply on loopback, as in Ollama)")
    add("--port", type=int, default=11434, help="listen port; 0 picks a free one (see --ready-file)")
    add("--models", type=_model_list, default=_model_list(DEFAULT_MODELS), help="installed models, a,b,c")
    add("--loaded", type=_model_list, default=(), help="models loaded at start (kept until unloaded)")
    add("--tokens", type=int, default=12, help="tokens per generated response")
    add("--rate", type=float, default=0.0, help="tokens per second; 0 = as fast as possible")
    add("--chunk-size", type=int, default=1, help="tokens per stream chunk")
    add("--delay-ms", type=float, default=0.0, help="delay before the first byte of work routes")
    add("--fail-before-first-byte", action="store_true", help="work routes answer 500 {'error': ...}")
    add("--die-after", type=int, default=None, help="close streams abruptly after N chunks")
    add("--version", default="0.12.0", help="version reported by /api/version")
    add("--name", default="", help="instance name, echoed in the X-Sim-Name response header")
    add("--ready-file", default="", help="write the base URL here once listening")
    add("--provider", action="store_true", help="/v1 answers as OpenAI does (a provider), not as Ollama")
    add("--api-key", default="", help="require this bearer credential on /v1 routes (OpenAI's 401 otherwise)")
    add("--base-path", type=_base_path, default="/v1", help="serve the /v1 routes under this path too")
    add("--journal-bodies", action="store_true", help="keep request bodies in /_sim/requests")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        host=args.host,
        port=args.port,
        models=args.models,
        loaded=args.loaded,
        tokens=max(0, args.tokens),
        rate=max(0.0, args.rate),
        chunk_size=max(1, args.chunk_size),
        delay_ms=max(0.0, args.delay_ms),
        fail=args.fail_before_first_byte,
        die_after=args.die_after,
        version=args.version,
        name=args.name,
        ready_file=args.ready_file,
        provider=args.provider,
        api_key=args.api_key,
        base_path=args.base_path,
        journal_bodies=args.journal_bodies,
    )


def _write_ready_file(path: str, url: str) -> None:
    """Atomic, so a watcher never reads a half-written URL."""
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(url + "\n")
    os.replace(partial, path)


async def serve(settings: Settings) -> None:
    """Listen until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = stop_event()  # before listening: a SIGTERM as soon as the port answers still stops cleanly
    sim = Simulator(settings)
    responder = Responder(settings.name)
    server = await loop.create_server(
        lambda: SimProtocol(sim, responder), settings.host, settings.port, reuse_address=True, backlog=4096
    )
    host, port = server.sockets[0].getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    if settings.ready_file:
        _write_ready_file(settings.ready_file, url)
    label = f"fortress sim {settings.name}" if settings.name else "fortress sim"
    print(f"{label} listening on {url}", file=sys.stderr, flush=True)
    await stop.wait()
    server.close()


def main(argv: list[str]) -> int:
    """Entry point for `python -m fortress.sim` and `fortress sim ...`; returns the exit code."""
    settings = settings_from(build_parser().parse_args(argv))
    try:
        uvloop.run(serve(settings))
    except OSError as error:
        print(f"fortress sim: cannot listen on {settings.host}:{settings.port}: {error}", file=sys.stderr)
        return 1
    return 0
