"""Run the benchmarks: `python -m bench.run` (full, writes RESULTS.md) or `--smoke` (gates, for test.sh)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import itertools
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from bench import workloads as w
from bench.gates import acceptance, smoke_failures
from bench.procs import OtherWork, own_cpu_seconds, raise_nofile
from bench.report import commit, jsonable, machine, markdown
from bench.stack import DEFAULT_TARGETS, TARGETS, Cpus, Stack, Target, open_stack
from bench.stats import Rounds, summarize
from bench.wrkload import ensure_wrk, run_wrk

ROOT = Path(__file__).resolve().parent.parent
STATIC_WORKLOADS = ("w1", "w1c", "w1t", "w1a", "w4")  # upstream: static nginx
W1_VARIANTS = ("w1c", "w1t", "w1a")  # Fortress alone, 32 connections: chat, translated, model "auto"
SETTLE_S = 5.0  # longest wait for the targets to fall idle before a measurement
IDLE_CPU_SHARE = 0.05  # of one core, all targets together: idle enough (pollers and stats writers run)
SIM_WORKLOADS = ("w2", "w3", "w5")  # upstream: the simulator
TRANSLATE_WORKLOADS = ("w2t", "w3t")  # Fortress alone: raw from Ollama vs translated from a provider
PHASES = (("static", STATIC_WORKLOADS), ("sim", SIM_WORKLOADS), ("translate", TRANSLATE_WORKLOADS))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="short run with gross-regression gates (exit 1)")
    p.add_argument("--rounds", type=int, help="override the number of rounds")
    p.add_argument("--seconds", type=int, help="override the length of each W1 run")
    p.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma list of direct,nginx,fortress; fortress-nometrics (Fortress with [metrics] off) and "
        "fortress-w2 (workers = 2) when asked for",
    )
    p.add_argument(
        "--workloads",
        default="w1,w1c,w1t,w1a,w2,w3,w4,w5,w2t,w3t",
        help="comma list of w1..w5; w1c, w1t, w1a (W1 through Fortress: /api/chat for a named, a translated "
        "and the 'auto' model); w2t, w3t (W2 and W3 through Fortress: raw vs translated)",
    )
    p.add_argument("--proxy-cpu", default="1", help="CPU list for the proxy under test ('' = no pinning)")
    p.add_argument("--load-cpu", default="0", help="CPU list for the load client and the upstream")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for this process and all it starts (e.g. -5 on a shared machine; negative needs root)",
    )
    p.add_argument("--results", type=Path, help="Markdown file to append to (full run: bench/RESULTS.md)")
    p.add_argument("--json", type=Path, help="JSON file to write (full run: bench/results.json)")
    return p.parse_args(argv)


def alternate(targets: list[Target], round_index: int) -> list[Target]:
    """A B C in even rounds, C B A in odd ones: a target never always runs first or last in a round."""
    return targets if round_index % 2 == 0 else targets[::-1]


class Bench:
    """Runs rounds of workloads over a stack's targets and collects one figure dict per run."""

    def __init__(self, plan: w.Plan, cpus: Cpus, workdir: Path) -> None:
        self.plan = plan
        self.cpus = cpus
        self.workdir = workdir
        self.rounds: Rounds = {}
        self.salts = itertools.count()  # every upload is a new blob
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)

    def record(
        self, name: str, stack: Stack, target: Target, measure: Callable[[], dict[str, float]]
    ) -> None:
        """Run one measurement, noting how much of each core other work took meanwhile."""
        self.settle(stack)
        meter = target.proxy
        upstream = stack.upstream
        on_proxy = OtherWork(self.cpus.proxy, meter.cpu_seconds if meter else lambda: 0.0)
        on_load = OtherWork(self.cpus.load, lambda: upstream.cpu_seconds() + own_cpu_seconds())
        with on_proxy, on_load:
            try:
                figures = measure()
            except Exception:
                traceback.print_exc()
                figures = {"errors": 1.0}
        figures["other_cpu_pct_on_proxy_core"] = on_proxy.pct
        figures["other_cpu_pct_on_load_core"] = on_load.pct
        self.rounds.setdefault(name, {}).setdefault(target.name, []).append(figures)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in figures.items())
        print(f"  {name:<16} {target.name:<9} {shown}", flush=True)

    @staticmethod
    def settle(stack: Stack) -> None:
        """Wait until no target is still busy from the previous measurement (a usage writer storing the
        last run's rows), so that work does not share the core with the next measurement."""
        meters = [t.proxy for t in stack.targets if t.proxy is not None]
        end = time.monotonic() + SETTLE_S
        before = sum(m.cpu_seconds() for m in meters)
        while time.monotonic() < end:
            time.sleep(0.2)
            now = sum(m.cpu_seconds() for m in meters)
            if now - before < 0.2 * IDLE_CPU_SHARE:
                return
            before = now

    def warm(self, stack: Stack, target: Target, small: w.Small = w.SMALL["w1"]) -> None:
        """One second of W1 load: pools, caches and lazily built state exist before anything is measured."""
        url = f"http://127.0.0.1:{target.port}{small.path}"
        self.ready(url, stack.keys.user, small.body)
        run_wrk(url, small.body.decode(), stack.keys.user, 32, 1, self.cpus.load, self.workdir)

    @staticmethod
    def ready(url: str, key: str, body: bytes = w.SHOW_BODY, timeout: float = 15.0) -> None:
        """Wait until the target answers a real request (a proxy listens before it knows its backends,
        and model "auto" answers 503 until it knows what they can do)."""
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(url, body, {"Authorization": f"Bearer {key}"})
        while True:
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError as exc:  # URLError and HTTPError are OSErrors
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} still fails after {timeout}s: {exc}") from None
            time.sleep(0.1)

    def fresh(self, stack: Stack, target: Target) -> None:
        """Restart and warm a proxy before W4 and W5: a heap that held 5,000 connections keeps that memory,
        so a second round on the same process would weigh nothing; one that held W3's 1,000 streams
        (about 10 MiB more for Fortress) would charge them to the upload."""
        if target.service is not None:
            target.service.restart()
            self.warm(stack, target)

    def static_phase(self, stack: Stack, chosen: set[str]) -> None:
        for t in stack.targets:
            self.warm(stack, t)
        for r in range(self.plan.rounds):
            print(f"round {r + 1}/{self.plan.rounds} (static upstream)", flush=True)
            if "w1" in chosen:
                runs = itertools.product(self.plan.small_connections, range(self.plan.small_repeats))
                for conns, repeat in runs:
                    for t in alternate(stack.targets, r + repeat):
                        self.record(
                            f"w1_small_c{conns}",
                            stack,
                            t,
                            lambda t=t, c=conns: w.small_requests(
                                t, stack, c, self.plan.small_seconds, self.cpus, self.workdir
                            ),
                        )
            self.w1_variants(stack, chosen, r)
            if "w4" in chosen:
                for t in alternate(stack.targets, r):
                    self.fresh(stack, t)
                    self.record(
                        "w4_idle",
                        stack,
                        t,
                        lambda t=t: self.runner.run(w.idle_connections(t, stack, self.plan)),
                    )

    def w1_variants(self, stack: Stack, chosen: set[str], round_index: int) -> None:
        """W1c, W1t, W1a on the Fortress target at 32 connections, each after one second of its own load
        (the translated route's pool, the auto choice), in alternating order."""
        fortress = next((t for t in stack.targets if t.name == "fortress"), None)
        variants = [v for v in W1_VARIANTS if v in chosen]
        if fortress is None or not variants:
            return
        for v in alternate(variants, round_index):
            small = w.SMALL[v]
            self.warm(stack, fortress, small)
            self.record(
                f"{v}_small_c32",
                stack,
                fortress,
                lambda small=small: w.small_requests(
                    fortress, stack, 32, self.plan.small_seconds, self.cpus, self.workdir, small
                ),
            )

    def sim_phase(self, stack: Stack, chosen: set[str], suffix: str = "") -> None:
        """W2, W3, W5 over the simulator; with suffix "t", W2t and W3t on the translate stack."""
        w2, w3 = "w2" + suffix, "w3" + suffix
        # First contact with as many connections as W3 opens costs heap growth and pool set-up in
        # every process involved; pay it here, not in round 1's TTFT tail.
        warm = dataclasses.replace(self.plan, fast_seconds=0.5, slow_seconds=0.5)
        for t in stack.targets:
            self.ready(f"http://127.0.0.1:{t.port}/api/show", stack.keys.user)
            self.runner.run(w.fast_stream(t, stack, warm))
            if w3 in chosen:
                self.runner.run(w.slow_streams(t, stack, warm))
        for r in range(self.plan.rounds):
            print(
                f"round {r + 1}/{self.plan.rounds} ({'translate' if suffix else 'simulator'} upstream)",
                flush=True,
            )
            jobs: list[tuple[str, Callable[..., Any]]] = []
            if w2 in chosen:
                jobs.append((f"{w2}_fast_stream", lambda t: w.fast_stream(t, stack, self.plan)))
            if w3 in chosen:
                jobs.append((f"{w3}_slow_streams", lambda t: w.slow_streams(t, stack, self.plan)))
            if "w5" in chosen and not suffix:
                jobs.append(
                    (
                        "w5_upload",
                        lambda t: w.upload(t, stack, w.Blob.make(self.plan.upload_mib, next(self.salts))),
                    )
                )
            for name, job in jobs:
                for t in alternate(stack.targets, r):
                    if name == "w5_upload":  # weigh the upload, not the heap W3's 1,000 streams left behind
                        self.fresh(stack, t)
                    self.record(name, stack, t, lambda t=t, job=job: self.runner.run(job(t)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = w.SMOKE if args.smoke else w.FULL
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.seconds:
        plan = dataclasses.replace(plan, small_seconds=args.seconds)
    names = tuple(t for t in TARGETS if t in args.targets.split(","))
    chosen = set(args.workloads.split(","))
    cpus = Cpus(proxy=args.proxy_cpu or None, load=args.load_cpu or None)
    nofile = raise_nofile()
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by nginx, Fortress, the simulator, wrk
    if cpus.load:  # the load client is this process
        os.sched_setaffinity(0, {int(c) for c in cpus.load.split(",")})
    ensure_wrk()
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="fortress-bench-"))
    bench = Bench(plan, cpus, workdir)
    print(f"work directory {workdir}; open-files limit {nofile}", flush=True)
    try:
        for kind, group in PHASES:
            if chosen & set(group):
                stack = open_stack(kind, names, cpus, workdir / kind, nofile)
                try:
                    if kind == "static":
                        bench.static_phase(stack, chosen)
                    else:
                        bench.sim_phase(stack, chosen, "t" if kind == "translate" else "")
                finally:
                    stack.close()
    finally:
        bench.runner.close()

    summary = summarize(bench.rounds)
    checks = acceptance(summary)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "smoke" if args.smoke else "full",
        "machine": machine(),
        "commit": commit(ROOT),
        "command": shlex.join(
            [".venv/bin/python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)]
        ),
        "pinning": f"proxy under test on CPU {cpus.proxy}, load client (this process, wrk) and upstream "
        f"on CPU {cpus.load}; niceness {args.nice}",
        "rounds": plan.rounds,
        "small_repeats": plan.small_repeats,
        "load_average": f"{load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end (1-minute; other work "
        "on the machine shows here)",
    }
    text = markdown(meta, summary, checks)
    print(text)
    results = args.results or (None if args.smoke else ROOT / "bench" / "RESULTS.md")
    if results:
        with results.open("a") as f:
            f.write(text)
    out = args.json or (None if args.smoke else ROOT / "bench" / "results.json")
    if out:
        doc = {
            "meta": meta,
            "plan": dataclasses.asdict(plan),
            "rounds": bench.rounds,
            "summary": summary,
            "acceptance": [dataclasses.asdict(c) for c in checks],
        }
        runs = json.loads(out.read_text()) if out.exists() else []
        runs = runs if isinstance(runs, list) else [runs]  # one run per element, like RESULTS.md's sections
        out.write_text(json.dumps(jsonable([*runs, doc]), indent=2) + "\n")
    if args.smoke:
        problems = smoke_failures(summary, plan.upload_mib)
        for p in problems:
            print(f"SMOKE FAILURE: {p}")
        print("smoke: " + ("FAILED" if problems else "passed (no gross regression)"))
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
