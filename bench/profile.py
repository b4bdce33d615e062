"""Profile Fortress under load with py-spy and name the hot functions: `python -m bench.profile`.

Fortress runs alone on the proxy CPU against the same upstream and load as the benchmark; py-spy
samples it (non-blocking, so the profile barely slows it) and the collapsed stacks are reduced to
self and inclusive shares per function.

`--workload inproc` measures the request path alone, in this process: the real ClientProtocol, Gate,
Exchange, UpstreamProtocol, pool and router on in-memory transports, W1's request (POST /api/show with
a key) and an answer shaped like the static upstream's, no sockets and no event loop turns. It prints
the Python CPU per request (best of five runs), a figure that a shared machine barely moves, where the
socket benchmarks' CPU per request also carries the kernel's wake-ups and other work's cache pollution.
`--workload bytecodes` drives the same path and counts the Python bytecodes each function executes per
request: exact, so it shows a change's effect on a machine too noisy to time it. Both count without
metrics unless `--metrics` is given (the benchmark's Fortress counts, as the default configuration does:
on W1 that adds ~4%); the figures in bench/RESULTS.md's steps are without, like for like.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType

import uvloop

from bench import workloads as w
from bench.nginx import CHAT, CHAT_COMPLETION, MODEL, SHOW, TAGS
from bench.procs import raise_nofile
from bench.run import Bench
from bench.stack import PROVIDER, Cpus, open_stack
from bench.wrkload import run_wrk
from fortress import keys, native
from fortress.backends.target import Target
from fortress.config import Config
from fortress.metrics.recorder import Recorder
from fortress.metrics.table import MetricsTable
from fortress.pipeline.limits import LocalLimiter
from fortress.proxy.pool import Pool
from fortress.proxy.protocol import ClientProtocol
from fortress.proxy.upstream import UpstreamProtocol
from fortress.proxy.worker import Worker
from fortress.routing.capabilities import parse_show
from fortress.state.snapshot import BackendRecord, KeyRecord, Policy, Snapshot

_FRAME_LINE = re.compile(r":\d+\)$")
RUNS = 5


def frame_name(frame: str) -> str:
    """'relay (fortress/proxy/relay.py:42)' -> 'relay (fortress/proxy/relay.py)': one entry per function."""
    return _FRAME_LINE.sub(")", frame.strip())


def shares(collapsed: str) -> tuple[Counter[str], Counter[str], int]:
    """Self and inclusive sample counts per function, and the total, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";") if not f.startswith("process ")]  # py-spy -s root
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return own, inclusive, total


def table(counts: Counter[str], total: int, top: int) -> str:
    return "\n".join(f"{100 * n / total:6.1f}%  {name}" for name, n in counts.most_common(top))


class MemoryTransport(asyncio.Transport):
    """Collects what the protocol writes; enough of a transport for both sides of the proxy (the fuzz
    tests of tests/security drive the client side with it too)."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Rows:
    """The usage pipe's record(), kept bounded (the rows are built as in the proxy, then dropped)."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def record(self, row: tuple) -> None:
        self.rows.append(row)
        if len(self.rows) >= 4096:
            self.rows.clear()


# What the in-process driver serves: W1 and its chat variants (bench/workloads.py), each with the answer
# its backend gives (the static upstream's, as bench/nginx.py serves it).
INPROC = {"w1": SHOW, "w1c": CHAT, "w1t": CHAT_COMPLETION, "w1a": CHAT}


async def _driver(workload: str = "w1", metrics: bool = False) -> tuple[Callable[[int], None], bytes]:
    """A W1 variant's request path in this process: a function serving n requests, and the first answer.
    The backends are the benchmark's: the upstream (Ollama) and the provider `prov` (W1t). `metrics`:
    counting on, into a table of its own (a temporary file, gone with the process's last reference)."""
    full, key_id, secret_hash = keys.generate()
    cfg = Config()
    snapshot = Snapshot(
        version=1,
        keys={key_id: KeyRecord(id=key_id, user="bench", secret_hash=secret_hash)},
        backends=(
            BackendRecord("upstream", "http://127.0.0.1:1"),
            BackendRecord(PROVIDER, "http://127.0.0.1:2/v1", type="openai", models=(MODEL,)),
        ),
        policy=Policy.build(cfg, {}),
    )
    loop = asyncio.get_running_loop()
    worker = Worker(cfg, snapshot, loop, usage=_Rows(), limiter=LocalLimiter())  # type: ignore[arg-type]
    worker.router.inventory.set_tags("upstream", TAGS, now=0.0)
    store = worker.router.capabilities
    for item in store.missing(worker.router.inventory):  # what the poller learns from /api/show ("auto")
        store.learnt(item.digest, parse_show(SHOW))
    if metrics:
        with tempfile.TemporaryDirectory(prefix="fortress-profile-") as tmp:  # the mapping outlives the name
            MetricsTable.create(f"{tmp}/metrics.bin")
            table = MetricsTable(f"{tmp}/metrics.bin")
        worker.count_with(Recorder(table, table.claim()))
    conns: list[UpstreamProtocol] = []

    async def connect(target: Target) -> UpstreamProtocol:
        up = UpstreamProtocol(target.name, worker.outbox)
        up.connection_made(MemoryTransport())
        conns.append(up)
        return up

    worker.pool = Pool(loop, worker.outbox, connect=connect)  # type: ignore[arg-type]
    client = ClientProtocol(worker)
    wire = MemoryTransport()
    client.connection_made(wire)
    small = w.SMALL[workload]
    request = (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    ) % (small.path.encode(), full.encode(), len(small.body), small.body)
    body = json.dumps(INPROC[workload]).encode()
    answer = (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 30 Nov 2026 00:00:00 GMT\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s"
    ) % (len(body), body)
    client.data_received(request)
    for _ in range(100):  # the first request opens the pooled connection; the rest reuse it
        await asyncio.sleep(0.01)
        if conns:
            break
    conns[0].data_received(answer)
    worker.outbox.flush()
    first = bytes(wire.out)

    def run(n: int) -> None:
        for _ in range(n):
            client.data_received(request)
            conns[0].data_received(answer)
            worker.outbox.flush()  # the end of a loop turn (one per request: more than under load)
        wire.out.clear()
        conns[0].transport.out.clear()  # type: ignore[union-attr]
        if len(conns) != 1:
            raise RuntimeError("the in-process driver lost its pooled connection")

    run(2000)  # warm up
    return run, first


async def inproc(requests: int, workload: str = "w1", metrics: bool = False) -> tuple[list[float], bytes]:
    """Python CPU seconds per request of RUNS runs of a W1 variant's request through the real request
    path, and the first answer the client got."""
    run, first = await _driver(workload, metrics)
    figures = []
    for _ in range(RUNS):
        start = time.process_time()
        run(requests)
        figures.append((time.process_time() - start) / requests)
    return figures, first


async def bytecodes(requests: int, workload: str = "w1", metrics: bool = False) -> tuple[Counter[str], bytes]:
    """Python bytecodes executed per function over `requests` of W1's requests (sys.settrace's opcode
    events): an exact count, the same on a busy machine and a quiet one, so a change's effect on the
    interpreter's work shows even where timing noise hides it (time per bytecode varies, the count not)."""
    run, first = await _driver(workload, metrics)
    per_code: Counter[CodeType] = Counter()

    def trace(frame: FrameType, event: str, arg: object) -> Callable[..., object]:
        frame.f_trace_opcodes = True
        if event == "opcode":
            per_code[frame.f_code] += 1
        return trace

    # no collection while counting: a collection's callbacks (hypothesis registers one in the tests) run
    # Python whose count depends on what else the process holds, not on the request path
    enabled = gc.isenabled()
    gc.disable()
    sys.settrace(trace)
    try:
        run(requests)
    finally:
        sys.settrace(None)
        if enabled:
            gc.enable()
    del per_code[run.__code__]  # the driver's own loop
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    counts: Counter[str] = Counter()
    for code, n in per_code.items():
        path = code.co_filename.removeprefix(root)
        counts[f"{code.co_name} ({path}:{code.co_firstlineno})"] += n
    return counts, first


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument(
        "--workload",
        choices=("small", "w1c", "w1t", "w1a", "stream", "translated", "inproc", "bytecodes"),
        default="small",
        help="W1 load (or its chat variants: named, translated, 'auto'), W2 streams, W2 streams of a "
        "provider's model translated (the W2t stack), or W1's request path in this process (no sockets: "
        "Python CPU per request, or the bytecodes it executes per function)",
    )
    p.add_argument("--requests", type=int, default=20000, help="inproc, bytecodes: requests per run")
    p.add_argument(
        "--variant", choices=tuple(INPROC), default="w1", help="inproc, bytecodes: W1 or a chat variant"
    )
    p.add_argument(
        "--metrics", action="store_true", help="inproc, bytecodes: counting on, as Fortress runs by default"
    )
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, help="keep py-spy's raw collapsed stacks here")
    args = p.parse_args(argv)
    if args.workload == "inproc":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the proxy's own loop
            figures, first = runner.run(inproc(args.requests, args.variant, args.metrics))
        status = first.split(b"\r\n", 1)[0].decode()
        runs = " ".join(f"{1e6 * f:.2f}" for f in figures)
        print(f"{status}; Python CPU per request: best {1e6 * min(figures):.2f} us (runs: {runs})")
        return 0 if status == "HTTP/1.1 200 OK" else 1
    if args.workload == "bytecodes":
        if not os.environ.get(native.PURE_ENV):  # compiled functions run no bytecodes: count the sources
            rerun = [sys.executable, "-m", "bench.profile", *(sys.argv[1:] if argv is None else argv)]
            os.execve(sys.executable, rerun, {**os.environ, native.PURE_ENV: "1"})
        n = min(args.requests, 5000)  # tracing runs ~50x slower; the count per request is exact anyway
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            counts, first = runner.run(bytecodes(n, args.variant, args.metrics))
        status = first.split(b"\r\n", 1)[0].decode()
        print(f"{status}; {sum(counts.values()) / n:,.0f} bytecodes per request\n")
        print("\n".join(f"{c / n:8.1f}  {name}" for name, c in counts.most_common(args.top)))
        return 0 if status == "HTTP/1.1 200 OK" else 1
    cpus = Cpus()
    nofile = raise_nofile()
    os.sched_setaffinity(0, {int(cpus.load or 0)})
    workdir = Path(tempfile.mkdtemp(prefix="fortress-profile-"))
    raw = args.out or workdir / "profile.txt"
    kind = {"stream": "sim", "translated": "translate"}.get(args.workload, "static")
    small = w.SMALL["w1" if args.workload == "small" else args.workload] if kind == "static" else None
    stack = open_stack(kind, ("fortress",), cpus, workdir / kind, nofile)
    try:
        target = stack.targets[-1]
        assert target.proxy is not None
        if small is not None:  # model "auto" answers 503 until the capabilities are known
            url = f"http://127.0.0.1:{target.port}{small.path}"
            Bench.ready(url, stack.keys.user, small.body)
        spy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "-r", "200", "-f", "raw",
             "-d", str(args.seconds), "-o", str(raw), "-p", str(target.proxy.roots[0].pid), "-s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        if small is not None:
            r = run_wrk(url, small.body.decode(), stack.keys.user, args.connections, args.seconds, cpus.load,
                        workdir)  # fmt: skip
            print(f"load: {r.rps:,.0f} requests/s, p99 {r.p99_ms:.2f} ms, {r.errors} errors")
        else:
            plan = dataclasses.replace(w.FULL, fast_seconds=float(args.seconds))
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                figures = runner.run(w.fast_stream(target, stack, plan))
            print(f"load: {figures['chunks_per_s']:,.0f} chunks/s, {figures['errors']:g} errors")
        _, err = spy.communicate(timeout=args.seconds + 60)
    finally:
        stack.close()
    if not raw.exists():
        print(f"py-spy wrote no profile: {err}", file=sys.stderr)
        return 1
    own, inclusive, total = shares(raw.read_text())
    print(f"{total} samples of Fortress on CPU ({raw})\n\nself time:\n{table(own, total, args.top)}")
    print(f"\ninclusive time:\n{table(inclusive, total, args.top)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
