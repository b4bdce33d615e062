"""A worker's hand on its own slot: the hot-path counting calls, and the once-a-second publish.

Hot path (each a few array updates in shared memory: no lock, no object, no formatting):
- `request(route, status, duration_s, ttfb_s, bytes_in, bytes_out)`: once per finished request, answered
  locally or relayed; `route` is a route-table name (never a raw path), `ttfb_s` None when no backend
  answered;
- `tokens(model, prompt, completion)`: a metered answer's token counts;
- `refused(kind)`: the limits stage answered 429 (`kind` one of `layout.REFUSALS`: the Gate's hook).
Off the hot path, `publish(...)` writes the figures that are states rather than events (requests in
flight, backends, usage pipe, snapshot, process CPU and memory) under the slot's seqlock: from a periodic
task, and by the scraping worker right before it collects, so its own figures are current and its
globals the freshest; another worker's states are at most one period old.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from itertools import islice
from typing import NamedTuple

import psutil

from fortress.metrics import layout as L
from fortress.metrics.table import MetricsTable, Names

_BOUNDS = L.BOUNDS
_NB = L.NB
# status code -> the first word of its histogram cells in a route row (its column, multiplied out once)
_CELL_AT = tuple(L.R_CELLS + column * _NB for column in L.STATUS_INDEX)
_OTHER_CELL_AT = L.R_CELLS + L.OTHER_STATUS * _NB
_R_DURATION_SUM = L.R_DURATION_SUM
_R_TTFB = L.R_TTFB
_R_TTFB_SUM = L.R_TTFB_SUM
_R_BYTES_IN = L.R_BYTES_IN
_R_BYTES_OUT = L.R_BYTES_OUT
_REFUSED = {kind: L.H_REFUSED + i for i, kind in enumerate(L.REFUSALS)}


class BackendState(NamedTuple):
    """One backend as a worker sees it (router and pool)."""

    name: str
    up: bool
    breaker: str  # one of layout.BREAKER_STATES
    outstanding: int
    pool_idle: int
    pool_active: int


class UsageCounts(NamedTuple):
    """The usage pipe's own running figures (cumulative since the worker started, pending now)."""

    written: int  # rows the writer acknowledged as stored
    dropped: int
    pending: int  # queued or sent but not yet acknowledged
    restarts: int  # times the writer process was restarted


class Recorder:
    """Writes one claimed slot; one instance per worker process."""

    __slots__ = (
        "_base",
        "_d",
        "_model_rows",
        "_models",
        "_process",
        "_q",
        "_route_views",
        "_routes",
        "_row_views",
        "table",
    )

    def __init__(self, table: MetricsTable, slot: int) -> None:
        self.table = table
        base = self._base = table.base(slot)
        self._q = table.q[base // 8 : (base + L.SLOT_BYTES) // 8]
        self._d = table.d[base // 8 : (base + L.SLOT_BYTES) // 8]
        self._routes = Names(table.mm, base, L.ROUTES_AT, L.ROUTE_STRIDE, L.ROUTE_NAMES_AT, L.ROUTES)
        self._models = Names(table.mm, base, L.MODELS_AT, L.MODEL_STRIDE, L.MODEL_NAMES_AT, L.MODELS)
        self._model_rows = self._models.rows  # the dict itself: one lookup on the hot path
        # a route row's words as their own views (counters, doubles): indexes in a row need no addition;
        # by route name (names with a row of their own) and by row (every row used, `other` included)
        self._route_views: dict[str, tuple[memoryview, memoryview]] = {}
        self._row_views: dict[int, tuple[memoryview, memoryview]] = {}
        self._process = psutil.Process()

    def close(self) -> None:
        for q, d in self._row_views.values():
            q.release()
            d.release()
        self._q.release()
        self._d.release()

    # -- hot path --------------------------------------------------------------------------------------------
    def request(
        self, route: str, status: int, duration_s: float, ttfb_s: float | None, bytes_in: int, bytes_out: int
    ) -> None:
        q, d = self._route_views.get(route) or self._route(route)
        try:
            cells = _CELL_AT[status]
        except IndexError:
            cells = _OTHER_CELL_AT
        q[cells + bisect_left(_BOUNDS, duration_s)] += 1
        d[_R_DURATION_SUM] += duration_s
        if ttfb_s is not None:
            q[_R_TTFB + bisect_left(_BOUNDS, ttfb_s)] += 1
            d[_R_TTFB_SUM] += ttfb_s
        q[_R_BYTES_IN] += bytes_in
        q[_R_BYTES_OUT] += bytes_out

    def _route(self, route: str) -> tuple[memoryview, memoryview]:
        """A route's row as views, made on the route's first request."""
        row = self._routes.row(route)
        views = self._row_views.get(row)
        if views is None:
            end = row + L.ROUTE_STRIDE
            views = self._row_views[row] = (self._q[row:end], self._d[row:end])
        if route in self._routes.rows:  # a row of its own, not `other`: kept, and the cache stays bounded
            self._route_views[route] = views
        return views

    def tokens(self, model: str | None, prompt: int, completion: int) -> None:
        row = self._model_rows.get(model)
        if row is None:
            row = self._models.row(model, L.UNKNOWN_MODEL)
        q = self._q
        q[row] += prompt
        q[row + 1] += completion

    def refused(self, kind: str) -> None:
        self._q[_REFUSED[kind]] += 1

    # -- states, once a second and before a scrape -------------------------------------------------------
    def publish(
        self,
        inflight: int,
        backends: Iterable[BackendState],
        usage: UsageCounts,
        snapshot_version: int,
        snapshot_loaded_at: float,
        now: float | None = None,
    ) -> None:
        """Overwrite the published words. Backends beyond `layout.BACKENDS` are left out.

        Everything is read and checked first (an unknown breaker state raises here), so the words between
        the two sequence bumps are plain stores that cannot stop half-way.
        """
        rows = [
            (
                b.name.encode()[: L.NAME_BYTES - 1],
                array(
                    "q", (b.up, L.BREAKER_STATES.index(b.breaker), b.outstanding, b.pool_idle, b.pool_active)
                ),
            )
            for b in islice(backends, L.BACKENDS)
        ]
        times = self._process.cpu_times()
        rss = self._process.memory_info().rss
        published_at = time.time() if now is None else now
        q, d, mm = self._q, self._d, self.table.mm
        names_at = self._base + L.BACKEND_NAMES_AT
        q[L.H_SEQ] += 1  # odd: readers retry until it is even again
        try:
            for i, (name, values) in enumerate(rows):
                offset = names_at + i * L.NAME_BYTES
                mm[offset] = len(name)
                mm[offset + 1 : offset + 1 + len(name)] = name
                row = L.BACKENDS_AT + i * L.BACKEND_STRIDE
                q[row : row + L.BACKEND_STRIDE] = values
            q[L.H_BACKENDS] = len(rows)
            q[L.H_INFLIGHT] = inflight
            q[L.H_USAGE_WRITTEN] = usage.written
            q[L.H_USAGE_DROPPED] = usage.dropped
            q[L.H_USAGE_PENDING] = usage.pending
            q[L.H_USAGE_RESTARTS] = usage.restarts
            d[L.H_CPU] = times.user + times.system
            q[L.H_RSS] = rss
            q[L.H_SNAPSHOT_VERSION] = snapshot_version
            d[L.H_SNAPSHOT_LOADED_AT] = snapshot_loaded_at
            d[L.H_PUBLISHED_AT] = published_at
        finally:
            q[L.H_SEQ] += 1
