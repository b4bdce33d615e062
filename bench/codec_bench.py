"""CPU per chunk of the translation codecs against a raw pass-through of the same provider stream.

    .venv/bin/python -m bench.codec_bench [--streams 40] [--tokens 1000] [--rounds 5]

Each stream is an OpenAI chat stream as a provider sends it (role chunk, one token per chunk with
`"usage": null`, finish chunk, usage chunk, `[DONE]`). A relay step is modelled in one thread over
two loopback socket pairs: what the provider sent is read with recv(), handed to the codec (or not:
raw), framed as an HTTP/1.1 chunk and sent to the client; the thread CPU time of that step only is
summed (the provider's send and the client's read are outside it), codec construction, head() and
end() included. "codec only" is the same work with no sockets. Modes run interleaved, round after
round, and each figure is the median over rounds.

Two arrivals are measured: "paced", one event per read (a model generating at its own pace, the
usual case), and "burst", up to 16 KiB of events per read (a provider faster than the relay, like
the benchmark's W2). Fortress's real relay does more per read than recv + send (the event loop,
flow control), so the ratios printed here are upper bounds of what translation adds to it
(acceptance: translated relay <= 3x raw); a burst makes the raw relay's cost per chunk tiny while
translation still reads every event.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fortress.sim.text import VOCABULARY
from fortress.translate import GenerationCodec, OpenAIRelay

HEADERS = [(b"Content-Type", b"text/event-stream; charset=utf-8")]
HEAD = {
    "id": "chatcmpl-B9MHDbslfCsxaSdAvZ3KSyAU",
    "object": "chat.completion.chunk",
    "created": 1750000000,
    "model": "gpt-4o-mini",
    "service_tier": "default",
    "system_fingerprint": "fp_sim",
}


def _event(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    chunk = {**HEAD, "choices": choices, "usage": usage}
    return b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def provider_stream(tokens: int) -> list[bytes]:
    """One provider answer, event by event (each is one read on the relay's side)."""
    events = [_event({"role": "assistant", "content": "", "refusal": None})]
    events += [_event({"content": VOCABULARY[i % len(VOCABULARY)]}) for i in range(tokens)]
    events.append(_event({}, "stop"))
    events.append(
        _event(None, usage={"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": 20 + tokens})
    )
    events.append(b"data: [DONE]\n\n")
    return events


class Raw:
    """What the relay does today: the bytes as they came."""

    prompt_tokens = completion_tokens = None

    def head(self, status: int, headers: list) -> tuple[int, bytes]:
        return status, b"text/event-stream"

    def feed(self, data: bytes) -> bytes:
        return data

    def end(self) -> bytes:
        return b""


MODES: dict[str, Callable[[], object]] = {
    "raw pass-through": Raw,
    "translated /api/chat": lambda: GenerationCodec(
        "prov/gpt-4o-mini", chat=True, stream=True, clock=time.time_ns
    ),
    "translated /api/generate": lambda: GenerationCodec(
        "prov/gpt-4o-mini", chat=False, stream=True, clock=time.time_ns
    ),
    "/v1 relay (usage hidden, P/M)": lambda: OpenAIRelay(client_wants_usage=False, model="prov/gpt-4o-mini"),
}


def frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


BURST = 16384  # bytes a fast provider's reads hold


def reads_of(events: list[bytes], burst: bool) -> list[bytes]:
    """What the relay reads: one event at a time, or as many as fit in BURST bytes."""
    if not burst:
        return events
    reads, pending, size = [], [], 0
    for event in events:
        if size + len(event) > BURST and pending:
            reads.append(b"".join(pending))
            pending, size = [], 0
        pending.append(event)
        size += len(event)
    return [*reads, b"".join(pending)]


def relay_ns(make: Callable[[], object], streams: int, events: list[bytes]) -> int:
    """Thread CPU ns of the relay steps for `streams` answers over loopback sockets."""
    provider_out, relay_in = socket.socketpair()
    relay_out, client_in = socket.socketpair()
    clock = time.thread_time_ns
    spent = 0
    try:
        for _ in range(streams):
            started = clock()
            codec = make()
            codec.head(200, HEADERS)  # type: ignore[attr-defined]
            spent += clock() - started
            for event in events:
                provider_out.sendall(event)
                started = clock()
                out = codec.feed(relay_in.recv(65536))  # type: ignore[attr-defined]
                if out:
                    relay_out.sendall(frame(out))
                spent += clock() - started
                if out:
                    client_in.recv(65536)
            started = clock()
            tail = codec.end()  # type: ignore[attr-defined]
            if tail:
                relay_out.sendall(frame(tail))
            spent += clock() - started
            if tail:
                client_in.recv(65536)
    finally:
        for sock in (provider_out, relay_in, relay_out, client_in):
            sock.close()
    return spent


def codec_ns(make: Callable[[], object], streams: int, events: list[bytes]) -> int:
    started = time.thread_time_ns()
    for _ in range(streams):
        codec = make()
        codec.head(200, HEADERS)  # type: ignore[attr-defined]
        for event in events:
            codec.feed(event)  # type: ignore[attr-defined]
        codec.end()  # type: ignore[attr-defined]
    return time.thread_time_ns() - started


def run(streams: int, tokens: int, rounds: int, burst: bool) -> dict[str, tuple[float, float]]:
    """Mode -> (relay µs per chunk, codec-only µs per chunk), medians over rounds."""
    events = reads_of(provider_stream(tokens), burst)
    chunks = streams * tokens
    relay: dict[str, list[float]] = {mode: [] for mode in MODES}
    alone: dict[str, list[float]] = {mode: [] for mode in MODES}
    for make in MODES.values():  # warm up: imports, caches, the socket buffers
        relay_ns(make, 1, events[:50])
    for _ in range(rounds):
        for mode, make in MODES.items():
            relay[mode].append(relay_ns(make, streams, events) / chunks / 1000)
            alone[mode].append(codec_ns(make, streams, events) / chunks / 1000)
    return {mode: (statistics.median(relay[mode]), statistics.median(alone[mode])) for mode in MODES}


def report(figures: dict[str, tuple[float, float]], title: str) -> str:
    raw = figures["raw pass-through"][0]
    rows = [title, f"{'mode':32} {'relay us/chunk':>15} {'x raw':>7} {'codec only us/chunk':>20}"]
    for mode, (per_chunk, alone) in figures.items():
        rows.append(f"{mode:32} {per_chunk:15.2f} {per_chunk / raw:7.2f} {alone:20.2f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=40, help="answers per mode and round")
    parser.add_argument("--tokens", type=int, default=1000, help="content chunks per answer")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (each runs every mode once)")
    args = parser.parse_args(argv)
    size = len(provider_stream(1)[1])
    python = sys.version.split()[0]
    print(f"{args.streams} x {args.tokens} tokens, {size}-byte events, {args.rounds} rounds, Python {python}")
    for burst, title in (
        (False, "paced: one event per read"),
        (True, f"burst: up to {BURST} bytes per read"),
    ):
        print()
        print(report(run(args.streams, args.tokens, args.rounds, burst), title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
