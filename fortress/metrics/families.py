"""What `/metrics` shows: the families built from summed `Totals`, with their names, help and labels.

Pure: `families(totals, now)` reads nothing else, so a test can render any state. Series appear once
they have something to say (a route once it was requested, a backend while a worker reports it); label
values come only from bounded sets (route-table names, `layout.STATUS_LABELS`, capped model names,
configured backends, fixed kinds), never from a key or a raw path.
"""

from __future__ import annotations

from fortress import __version__
from fortress.metrics import layout as L
from fortress.metrics.exposition import Family, Histogram, Labels
from fortress.metrics.table import Totals


def _counts(routes: dict[str, list[float]]) -> tuple[list, list, list, list, list]:
    requests: list[tuple[Labels, float]] = []
    duration: list[tuple[Labels, Histogram]] = []
    ttfb: list[tuple[Labels, Histogram]] = []
    bytes_in: list[tuple[Labels, float]] = []
    bytes_out: list[tuple[Labels, float]] = []
    for route in sorted(routes):
        row = routes[route]
        by_route: Labels = (("route", route),)
        for column, status in enumerate(L.STATUS_LABELS):
            count = sum(row[L.R_CELLS + column * L.NB : L.R_CELLS + (column + 1) * L.NB])
            if count:
                requests.append(((*by_route, ("status", status)), int(count)))
        buckets = [int(sum(row[L.R_CELLS + s * L.NB + b] for s in range(L.NSTATUS))) for b in range(L.NB)]
        if any(buckets):
            duration.append((by_route, Histogram(buckets, row[L.R_DURATION_SUM])))
        first = [int(n) for n in row[L.R_TTFB : L.R_TTFB + L.NB]]
        if any(first):
            ttfb.append((by_route, Histogram(first, row[L.R_TTFB_SUM])))
        bytes_in.append((by_route, int(row[L.R_BYTES_IN])))
        bytes_out.append((by_route, int(row[L.R_BYTES_OUT])))
    return requests, duration, ttfb, bytes_in, bytes_out


def redis_family(up: bool) -> Family:
    """Whether this node reaches Redis (only with [cluster] redis_url): 0 = last snapshot, local limits."""
    return Family(
        "fortress_cluster_redis_up",
        "gauge",
        "1 while Redis answers; 0: serving on the last configuration snapshot with limits counted locally.",
        [((), int(up))],
    )


def families(t: Totals, now: float) -> list[Family]:
    requests, duration, ttfb, bytes_in, bytes_out = _counts(t.routes)
    tokens: list[tuple[Labels, float]] = []
    for model in sorted(t.models):
        row = t.models[model]
        tokens.append(((("kind", "prompt"), ("model", model)), int(row[L.M_PROMPT])))
        tokens.append(((("kind", "completion"), ("model", model)), int(row[L.M_COMPLETION])))
    up: list[tuple[Labels, float]] = []
    outstanding: list[tuple[Labels, float]] = []
    breaker: list[tuple[Labels, float]] = []
    pool: list[tuple[Labels, float]] = []
    for name in sorted(t.backends):
        row = t.backends[name]
        by_backend: Labels = (("backend", name),)
        up.append((by_backend, int(row[L.B_UP])))
        outstanding.append((by_backend, int(row[L.B_OUTSTANDING])))
        for i, state in enumerate(L.BREAKER_STATES):
            breaker.append(((*by_backend, ("state", state)), int(row[L.B_BREAKER] == i)))
        pool.append(((*by_backend, ("state", "idle")), int(row[L.B_POOL_IDLE])))
        pool.append(((*by_backend, ("state", "active")), int(row[L.B_POOL_ACTIVE])))
    snapshot: list[tuple[Labels, float]] = []
    age: list[tuple[Labels, float]] = []
    if t.snapshot_version is not None and t.snapshot_loaded_at is not None:
        snapshot.append(((), t.snapshot_version))
        age.append(((), max(0.0, round(now - t.snapshot_loaded_at, 3))))
    return [
        Family(
            "fortress_requests_total",
            "counter",
            "Requests answered, by route (the route table's name, never the raw path) and status.",
            requests,
        ),
        Family(
            "fortress_request_duration_seconds",
            "histogram",
            "Seconds from the request's first byte to the answer's last byte, by route.",
            duration,
            L.BOUNDS,
        ),
        Family(
            "fortress_request_ttfb_seconds",
            "histogram",
            "Seconds from the request's first byte to the backend's answer head, by route (relayed only).",
            ttfb,
            L.BOUNDS,
        ),
        Family(
            "fortress_request_bytes_total", "counter", "Request body bytes from clients, by route.", bytes_in
        ),
        Family(
            "fortress_response_bytes_total", "counter", "Answer bytes sent to clients, by route.", bytes_out
        ),
        Family(
            "fortress_tokens_total",
            "counter",
            f"Tokens counted from backend answers, by kind and model (at most {L.MODELS - 1} models per "
            'worker, then model="other").',
            tokens,
        ),
        Family("fortress_inflight_requests", "gauge", "Requests being relayed now.", [((), t.inflight)]),
        Family(
            "fortress_limit_refusals_total",
            "counter",
            "Requests refused with 429 by a key's limits, by kind (rate, tokens, concurrency).",
            [((("kind", kind),), t.refused[i]) for i, kind in enumerate(L.REFUSALS)],
        ),
        Family("fortress_backend_up", "gauge", "1 when the backend takes traffic (breaker not open).", up),
        Family(
            "fortress_backend_outstanding_requests",
            "gauge",
            "Requests sent to the backend and not yet answered in full.",
            outstanding,
        ),
        Family(
            "fortress_backend_breaker_state",
            "gauge",
            "The backend's circuit breaker: 1 for its current state.",
            breaker,
        ),
        Family(
            "fortress_pool_connections",
            "gauge",
            "Keep-alive connections to the backend, idle in the pool or carrying a request.",
            pool,
        ),
        Family(
            "fortress_usage_rows_written_total",
            "counter",
            "Usage rows the writer stored in the database.",
            [((), t.usage_written)],
        ),
        Family(
            "fortress_usage_rows_dropped_total",
            "counter",
            "Usage rows lost because the writer could not keep up or was gone.",
            [((), t.usage_dropped)],
        ),
        Family(
            "fortress_usage_rows_pending",
            "gauge",
            "Usage rows queued or sent and not yet stored.",
            [((), t.usage_pending)],
        ),
        Family(
            "fortress_usage_writer_restarts_total",
            "counter",
            "Times a usage writer process was restarted.",
            [((), t.usage_restarts)],
        ),
        Family(
            "fortress_snapshot_version",
            "gauge",
            "The configuration version (keys, backends, policy) the proxy works from.",
            snapshot,
        ),
        Family("fortress_snapshot_age_seconds", "gauge", "Seconds since that configuration was loaded.", age),
        Family("fortress_workers", "gauge", "Proxy worker processes running.", [((), t.workers)]),
        Family(
            "fortress_build_info",
            "gauge",
            "The running Fortress version.",
            [((("version", __version__),), 1)],
        ),
        Family(
            "process_start_time_seconds",
            "gauge",
            "When the proxy started, in seconds since the epoch.",
            [((), round(t.started_at, 3))],
        ),
        Family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of the proxy's worker processes, exited ones included.",
            [((), round(t.cpu_seconds, 6))],
        ),
        Family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the running worker processes, summed.",
            [((), t.rss_bytes)],
        ),
    ]
