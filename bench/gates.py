"""Verdicts on a summary: issue 14's acceptance targets, and the smoke mode's gates.

Targets are reported (met or missed, by how much); gates decide the exit status of --smoke. They are
set far from normal figures so that noise never trips them, except W1's CPU per request over nginx's,
which issue 14 holds at 3.5x: with the request path compiled (fortress.native) the smoke run measures
~2.9x, and twice the per-request work, or the build silently falling back to pure Python (~4x), fails CI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.stats import Summary, ratio

SMALL = "w1_small_c32"
CHAT = "w1c_small_c32"
TRANSLATED_SMALL = "w1t_small_c32"
AUTO = "w1a_small_c32"
SLOW = "w3_slow_streams"
IDLE = "w4_idle"
UPLOAD = "w5_upload"
TRANSLATED = "w2t_fast_stream"
TRANSLATED_SLOW = "w3t_slow_streams"

# Smoke gates. The rps floor is relative to nginx on the same machine and run; see bench/README.md.
MAX_CPU_VS_NGINX = 3.5  # W1 CPU per request, Fortress over nginx in the same run (issue 14)
MIN_RPS_VS_NGINX = 0.12  # about half of today's 0.254x
MAX_IDLE_KIB = 50.0
MAX_UPLOAD_GROWTH_SHARE = 0.5  # RSS growth above half the upload size means the body is being held
MAX_TRANSLATED_CPU_RATIO = 6.0  # twice the target: translation doing something per byte, not per event


@dataclass(frozen=True)
class Check:
    name: str
    measured: float
    goal: str
    met: bool

    def line(self) -> str:
        verdict = "met" if self.met else "MISSED"
        return f"{self.name}: {self.measured:.3g} (goal {self.goal}) {verdict}"


def _get(summary: Summary, workload: str, target: str, metric: str) -> float:
    return summary.get(workload, {}).get(target, {}).get(metric, math.nan)


def _check(name: str, measured: float, goal: str, ok: bool) -> Check:
    return Check(name, measured, goal, ok and not math.isnan(measured))


def _vs(summary: Summary, metric: str, a: tuple[str, str], b: tuple[str, str]) -> float:
    """One (workload, target)'s figure over another's."""
    return ratio(_get(summary, *a, metric), _get(summary, *b, metric))


def acceptance(summary: Summary) -> list[Check]:
    """Issue 14's targets for Fortress, each as measured in this run (NaN, "not run", when it was not)."""
    fx, ng = (SMALL, "fortress"), (SMALL, "nginx")
    per_request = "cpu_s_per_10k"
    rps = _vs(summary, "rps", fx, ng)
    cpu = _vs(summary, per_request, fx, ng)
    p99 = _vs(summary, "p99_ms", fx, ng)
    translated = _vs(summary, per_request, (TRANSLATED_SMALL, "fortress"), fx)
    auto = _vs(summary, per_request, (AUTO, "fortress"), fx)
    ttft = _get(summary, SLOW, "fortress", "ttft_p99_ms") - _get(summary, SLOW, "direct", "ttft_p99_ms")
    gaps = _vs(summary, "gap_p99_ms", (SLOW, "fortress"), (SLOW, "direct"))
    idle = _get(summary, IDLE, "fortress", "rss_per_conn_kib")
    peak = _get(summary, UPLOAD, "fortress", "peak_rss_mib")
    fast, slow = translated_ratio(summary, TRANSLATED), translated_ratio(summary, TRANSLATED_SLOW)
    checks = [
        _check("W1 c32 CPU per request, Fortress / nginx", cpu, "<= 2", cpu <= 2),
        _check("W1 c32 requests/s, Fortress / nginx", rps, ">= 0.5", rps >= 0.5),
        _check("W1 c32 p99 latency, Fortress / nginx", p99, "<= 2", p99 <= 2),
        _check("W1t translated model: CPU per request / W1's", translated, "<= 1.3", translated <= 1.3),
        _check('W1a model "auto": CPU per request / W1\'s', auto, "<= 1.3", auto <= 1.3),
        _check("W3 TTFT p99 added by Fortress (ms)", ttft, "<= 2", ttft <= 2),
        _check("W3 inter-chunk gap p99, Fortress / direct", gaps, "<= 1.1", gaps <= 1.1),
        _check("W4 RSS per idle connection (KiB)", idle, "<= 8", idle <= 8),
        _check("W5 256 MiB upload peak RSS, process tree (MiB)", peak, "< 64", peak < 64),
        _check("W2t translated CPU per chunk / raw", fast, "<= 3", fast <= 3),
        _check("W3t translated CPU per chunk / raw", slow, "<= 3", slow <= 3),
    ]
    w2 = _vs(summary, per_request, (SMALL, "fortress-w2"), fx)
    if not math.isnan(w2):  # workers = 2: the shared limiter and counters cost little
        checks.append(_check("W1 c32 CPU per request, workers=2 / workers=1", w2, "<= 1.1", w2 <= 1.1))
    off = _get(summary, SMALL, "fortress-nometrics", per_request)
    if not math.isnan(off):  # issue 15: counting must not show on W1
        on = ratio(_get(summary, SMALL, "fortress", per_request), off)
        checks.append(_check("W1 c32 CPU per request, metrics on / off", on, "< 1.05", on < 1.05))
    return checks


def translated_ratio(summary: Summary, workload: str) -> float:
    """Fortress's CPU per relayed chunk for a provider's translated stream over a raw Ollama stream."""
    metric = "cpu_s_per_100k_chunks"
    return ratio(_get(summary, workload, "translated", metric), _get(summary, workload, "raw", metric))


def smoke_failures(summary: Summary, upload_mib: int) -> list[str]:
    """Errors, W1 CPU per request above twice today's ratio to nginx's, and gross regressions only: a
    collapse of throughput, per-connection or per-upload bloat.

    A gate applies when its workload ran with Fortress among the targets; a crash shows as errors.
    """
    problems = [
        f"{w} {t}: {figures['errors']:g} failed responses"
        for w, by_target in summary.items()
        for t, figures in by_target.items()
        if figures.get("errors", 0) > 0
    ]
    ran = {w for w, by_target in summary.items() if "fortress" in by_target or "translated" in by_target}
    if SMALL in ran and "nginx" in summary[SMALL]:
        fx, ng = (SMALL, "fortress"), (SMALL, "nginx")
        cpu = _vs(summary, "cpu_s_per_10k", fx, ng)
        if not cpu <= MAX_CPU_VS_NGINX:
            problems.append(
                f"W1 Fortress CPU per request is {cpu:.2f}x nginx's (ceiling {MAX_CPU_VS_NGINX:g})"
            )
        rps = _vs(summary, "rps", fx, ng)
        if not rps >= MIN_RPS_VS_NGINX:
            problems.append(f"W1 Fortress requests/s is {rps:.3f}x nginx's (floor {MIN_RPS_VS_NGINX})")
    if IDLE in ran:
        idle = _get(summary, IDLE, "fortress", "rss_per_conn_kib")
        if not idle <= MAX_IDLE_KIB:
            problems.append(f"W4 Fortress RSS per idle connection {idle:.1f} KiB (ceiling {MAX_IDLE_KIB})")
    if UPLOAD in ran:
        growth = _get(summary, UPLOAD, "fortress", "rss_growth_mib")
        if not growth <= upload_mib * MAX_UPLOAD_GROWTH_SHARE:
            problems.append(f"W5 Fortress RSS grew {growth:.1f} MiB during a {upload_mib} MiB upload")
    if TRANSLATED in ran:
        cost = translated_ratio(summary, TRANSLATED)
        if not cost <= MAX_TRANSLATED_CPU_RATIO:
            problems.append(
                f"W2t translated stream costs {cost:.2f}x the raw relay's CPU per chunk"
                f" (ceiling {MAX_TRANSLATED_CPU_RATIO})"
            )
    return problems
