"""The dashboard: host load, live proxy figures, backend health and loaded models, busiest keys, and
the addresses trusted through IP trust sessions (POST /auth).

The page polls /dashboard/live every 2 s (htmx) and swaps one fragment. The proxy's figures come
from proxy_stats (one row per worker, refreshed each second) and, for tokens and limit refusals, from
the proxy's metrics table (the figures of GET /metrics), so the admin never asks the proxy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from litestar import Controller, Request, get
from litestar.response import Redirect, Template

from admin import inventory, queries
from admin.controllers import welcome
from admin.web import cfg, db, page
from fortress.cluster.nodes import list_nodes
from fortress.metrics import layout
from fortress.metrics.table import read_totals
from fortress.state import trust
from fortress.state.load import read_config_version
from fortress.state.repo import get_settings
from fortress.state.snapshot import Policy


@dataclass(frozen=True)
class Rates:
    per_s: float
    error_pct: float


def rates(prev: tuple[float, int, int] | None, now: tuple[float, int, int]) -> Rates:
    """Requests/s and error share between two (time, requests, errors) samples of the cumulative counters."""
    if prev is None or now[0] <= prev[0] or now[1] < prev[1]:  # first sample or a proxy restart
        return Rates(0.0, 0.0)
    done = now[1] - prev[1]
    failed = max(0, now[2] - prev[2])
    return Rates(done / (now[0] - prev[0]), 100.0 * failed / done if done else 0.0)


def counted(data_dir: Path) -> dict[str, int] | None:
    """Tokens and limit refusals since the proxy started, summed over its workers; None while it does not
    count (not running, or [metrics] off)."""
    t = read_totals(str(data_dir / "metrics.shm"))
    if t is None or not t.workers:
        return None
    return {
        "prompt": int(sum(row[layout.M_PROMPT] for row in t.models.values())),
        "completion": int(sum(row[layout.M_COMPLETION] for row in t.models.values())),
        "refused": sum(t.refused),
    }


async def live_context(request: Request) -> dict:
    state = request.app.state
    live = await queries.proxy_live(db(request))
    sample = (time.monotonic(), live.requests, live.errors)
    r = rates(getattr(state, "last_sample", None), sample)
    state.last_sample = sample
    targets = await inventory.targets(db(request), cfg(request))
    probes = await state.inventory.probe_all(targets)
    fill = {}
    for detail in live.detail:
        for key_id, f in (detail.get("keys") or {}).items():
            fill[key_id] = f
    disk = psutil.disk_usage(str(cfg(request).data_dir))
    return {
        "cpu": psutil.cpu_percent(interval=None),
        "mem": psutil.virtual_memory(),
        "disk": disk,
        "live": live,
        "rates": r,
        "probes": probes,
        "targets": targets,
        "busy": await queries.busiest_keys(db(request)),
        "fill": fill,
        "counted": counted(cfg(request).data_dir),
        "now": time.time(),
        # every gateway node (issue 16): shown with [cluster] redis_url, or when more than one reports
        "nodes": await list_nodes(db(request)),
        "cluster": cfg(request).cluster.enabled,
        "config_version": await read_config_version(db(request)),
    }


class DashboardController(Controller):
    @get("/")
    async def dashboard(self, request: Request) -> Template | Redirect:
        if await welcome.pending(request):  # a fresh install: walk the first admin through set-up
            return Redirect(path="/welcome", status_code=303)
        ttl = Policy.build(cfg(request), await get_settings(db(request))).security.ip_trust_ttl_s
        sessions = await trust.live(db(request))
        return page(request, "dashboard.html", trust_ttl=ttl, trusted=sessions, **await live_context(request))

    @get("/dashboard/live")
    async def live(self, request: Request) -> Template:
        return page(request, "_live.html", **await live_context(request))
