"""Writing results down: a Markdown section for bench/RESULTS.md and a JSON document for machines."""

from __future__ import annotations

import math
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from bench.gates import AUTO, CHAT, SMALL, TRANSLATED_SMALL, Check
from bench.stack import ROUTES, TARGETS
from bench.stats import Summary, ratio

TITLES = {
    "w1_small_c32": "W1 small JSON request/response (POST /api/show), 32 keep-alive connections",
    "w1_small_c256": "W1 small JSON request/response (POST /api/show), 256 keep-alive connections",
    "w1c_small_c32": "W1c small chat through Fortress (POST /api/chat, no stream, a named Ollama model), 32 "
    "connections",
    "w1t_small_c32": "W1t small chat through Fortress, translated (prov/bench:latest, an OpenAI provider's "
    "chat.completion), 32 connections",
    "w1a_small_c32": 'W1a small chat through Fortress, model "auto" (Fortress picks bench:latest), '
    "32 connections",
    "w2_fast_stream": "W2 fast stream (/api/generate, 1,000 chunks per response, as fast as the upstream)",
    "w3_slow_streams": "W3 many slow streams (concurrent /api/generate at a steady token rate)",
    "w4_idle": "W4 idle keep-alive connections",
    "w5_upload": "W5 large upload pass-through (POST /api/blobs, admin-scope key)",
    "w2t_fast_stream": "W2t fast stream through Fortress: raw from Ollama vs translated from a provider's "
    "OpenAI stream (1,000 chunks per response)",
    "w3t_slow_streams": "W3t many slow streams through Fortress: raw from Ollama vs translated (provider)",
}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": nginx.removeprefix("nginx version: "),
    }


def commit(root: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" (working tree has uncommitted changes)" if git("status", "--porcelain") else "")


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


Figures = dict[str, float]


def workload_table(name: str, by_target: dict[str, Figures], w1: Figures | None = None) -> list[str]:
    """One table per workload: a column per target and the ratios that matter (Fortress over nginx,
    over itself without metrics or with one worker, on the translate stack translated over raw, and for
    W1's variants, which only Fortress runs, Fortress over its own W1 figures, `w1`)."""
    order = ROUTES if ROUTES[0] in by_target else TARGETS
    present = [t for t in order if t in by_target]
    metrics = list(next(iter(by_target.values())).keys())
    pairs = [
        (label, by_target[a], by_target[b]) for label, a, b in _RATIOS if a in by_target and b in by_target
    ]
    if w1 is not None and "fortress" in by_target:
        pairs = [("fortress / W1's", by_target["fortress"], w1)]
    elif not pairs:
        pairs = [(_RATIOS[0][0], by_target.get("fortress", {}), by_target.get("nginx", {}))]
    lines = [
        f"#### {TITLES.get(name, name)}",
        "",
        "| figure | " + " | ".join(present) + "".join(f" | {label}" for label, _, _ in pairs) + " |",
        "|---" * (len(present) + len(pairs) + 1) + "|",
    ]
    for m in metrics:
        values = [by_target[t].get(m, math.nan) for t in present]
        rels = [ratio(a.get(m, math.nan), b.get(m, math.nan)) for _, a, b in pairs]
        lines.append(f"| {m} | " + " | ".join(_fmt(v) for v in [*values, *rels]) + " |")
    return [*lines, ""]


W1_VARIANTS = (CHAT, TRANSLATED_SMALL, AUTO)
_RATIOS = (
    ("fortress / nginx", "fortress", "nginx"),
    ("metrics on / off", "fortress", "fortress-nometrics"),
    ("workers=2 / 1", "fortress-w2", "fortress"),
    ("translated / raw", "translated", "raw"),
)


def markdown(meta: dict[str, Any], summary: Summary, checks: list[Check]) -> str:
    m = meta["machine"]
    ran = [t for t in (*TARGETS, *ROUTES) if any(t in by_target for by_target in summary.values())]
    lines = [
        f"### Run {meta['date']} ({meta['mode']})",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, nginx {m['nginx']}",
        f"- Commit: {meta['commit']}",
        f"- Command: `{meta['command']}`",
        f"- Pinning: {meta['pinning']}",
        f"- Load average: {meta['load_average']}",
        f"- Rounds: {meta['rounds']}, targets in alternation ({' '.join(ran)} per workload per round"
        f"{_repeats(meta)}); medians shown, errors summed. For direct, CPU and RSS figures are the "
        "upstream's own.",
        "",
    ]
    w1 = summary.get(SMALL, {}).get("fortress")
    for name, by_target in summary.items():
        lines += workload_table(name, by_target, w1 if name in W1_VARIANTS else None)
    lines += [
        "#### Targets (Fortress, from this run)",
        "",
        "| target | measured | goal | verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c.name} | {_fmt(c.measured)} | {c.goal} | {_verdict(c)} |" for c in checks]
    return "\n".join([*lines, "", ""])


def _verdict(check: Check) -> str:
    """met, MISSED, or "not run" when this run did not measure it (a subset of the workloads)."""
    if check.met:
        return "met"
    return "not run" if math.isnan(check.measured) else "MISSED"


def jsonable(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _repeats(meta: dict) -> str:
    n = meta.get("small_repeats", 1)
    return f"; W1 {n} times per round, alternated" if n > 1 else ""
