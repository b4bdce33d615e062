"""Profile Fortress under load with py-spy and name the hot functions: `python -m bench.profile`.

Fortress runs alone on the proxy CPU against the same upstream and load as the benchmark; py-spy
samples it (non-blocking, so the profile barely slows it) and the collapsed stacks are reduced to
self and inclusive shares per function.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import uvloop

from bench import workloads as w
from bench.procs import raise_nofile
from bench.run import Bench
from bench.stack import Cpus, open_stack
from bench.wrkload import run_wrk

_FRAME_LINE = re.compile(r":\d+\)$")


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument(
        "--workload",
        choices=("small", "w1c", "w1t", "w1a", "stream", "translated"),
        default="small",
        help="W1 load (or its chat variants: named, translated, 'auto'), W2 streams, or W2 streams of a "
        "provider's model translated (the W2t stack)",
    )
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, help="keep py-spy's raw collapsed stacks here")
    args = p.parse_args(argv)
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
