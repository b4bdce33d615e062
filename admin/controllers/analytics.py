"""Analytics: requests per hour and day, tokens, models, backends, latency, status codes;
a UTC date range, an optional user, SVG charts drawn here, and the CSV behind every chart
(the PNG of a chart is made in the browser from the same SVG: admin.js)."""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from urllib.parse import urlencode

from litestar import Controller, Request, get
from litestar.exceptions import NotFoundException, ValidationException
from litestar.response import Response, Template

from admin import charts, queries
from admin.queries import HEADERS, Range
from admin.web import db, page

DEFAULT_DAYS = 7
MAX_DAYS = 3660
MAX_COLUMNS = 400  # a long range merges hours (or days) so a time chart stays readable and small
_EPOCH = date(1970, 1, 1)


def parse_range(start: str, end: str, user: str, now: float) -> tuple[Range, date, date]:
    """Inclusive UTC dates (YYYY-MM-DD) -> whole hours; default: the last DEFAULT_DAYS days."""
    today = datetime.fromtimestamp(now, UTC).date()
    try:
        last = date.fromisoformat(end) if end else today
        first = date.fromisoformat(start) if start else last - timedelta(days=DEFAULT_DAYS - 1)
    except ValueError:
        raise ValidationException("dates must look like 2025-01-31") from None
    if first > last:
        first, last = last, first
    first = max(first, last - timedelta(days=MAX_DAYS))
    rng = Range((first - _EPOCH).days * 24, ((last - _EPOCH).days + 1) * 24, user)
    return rng, first, last


def timeline(
    points: dict[int, Sequence[float]], first: int, last: int, width: int, max_columns: int = MAX_COLUMNS
) -> tuple[int, list[tuple[int, list[float]]]]:
    """Units first..last (hours or days), zero-filled, summed `size` at a time so at most
    `max_columns` remain; returns size and (first unit of the bucket, sums) per bucket."""
    size = max(1, math.ceil((last - first + 1) / max_columns))
    out: list[tuple[int, list[float]]] = []
    for start in range(first, last + 1, size):
        sums = [0.0] * width
        for unit in range(start, min(start + size, last + 1)):
            for j, v in enumerate(points.get(unit, ())):
                sums[j] += v
        out.append((start, sums))
    return size, out


def _hours_chart(rows: list[tuple], rng: Range, now: float) -> str:
    points = {ts // 3600: (n - err, err) for ts, n, err in rows}
    size, buckets = timeline(points, rng.start, min(rng.end - 1, int(now // 3600)), 2)
    labels, ticks = [], []
    short = len(buckets) * size <= 48
    for start, _ in buckets:
        t = datetime.fromtimestamp(start * 3600, UTC)
        labels.append(f"{t:%a %Y-%m-%d %H:%M} UTC" + (f" (+{size} h)" if size > 1 else ""))
        if start % 24 < size:  # the bucket holding midnight names the day
            ticks.append(f"{t:%a %d}")
        else:
            ticks.append(f"{t:%H:00}" if short and start % 3 == 0 else "")
    title = "Requests per hour" if size == 1 else f"Requests per {size} hours"
    column = [b[1] for b in buckets]
    return charts.columns(
        title, labels, _outcomes(column), unit="requests", axis="hour (UTC)", ticks=ticks, width=charts.WIDE
    )


def _outcomes(column: list[list[float]]) -> list[charts.Series]:
    """Successful requests and errors, stacked, from [successful, errors, ...] per bucket."""
    return [
        charts.Series("successful", [v[0] for v in column]),
        charts.Series("errors", [v[1] for v in column], "bad"),
    ]


def _day_charts(rows: list[tuple], first: date, last: date, now: float) -> tuple[str, str]:
    today = datetime.fromtimestamp(now, UTC).date()
    points = {(date.fromisoformat(d) - _EPOCH).days: (n - err, err, p, c) for d, n, err, p, c in rows}
    size, buckets = timeline(points, (first - _EPOCH).days, (min(last, today) - _EPOCH).days, 4)
    days = [_EPOCH + timedelta(days=start) for start, _ in buckets]
    labels = [f"{d:%a %Y-%m-%d}" + (f" (+{size} d)" if size > 1 else "") for d in days]
    ticks = [f"{d:%a %d}" if len(days) <= 14 else f"{d:%m-%d}" for d in days]
    per = "day" if size == 1 else f"{size} days"
    column = [b[1] for b in buckets]
    requests = charts.columns(
        f"Requests per {per}", labels, _outcomes(column), unit="requests", axis="day (UTC)", ticks=ticks
    )
    split = [
        charts.Series("prompt", [v[2] for v in column]),
        charts.Series("completion", [v[3] for v in column], "s2"),
    ]
    tokens = charts.columns(f"Tokens per {per}", labels, split, unit="tokens", axis="day (UTC)", ticks=ticks)
    return requests, tokens


def _status_label(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def filename(name: str, user: str, first: date, last: date) -> str:
    """The download name of a chart's table or picture, without the extension."""
    suffix = "-" + re.sub(r"[^A-Za-z0-9._@+-]", "_", user) if user else ""  # user comes from the URL
    return f"fortress-{name}{suffix}-{first.isoformat()}-{last.isoformat()}"


class AnalyticsController(Controller):
    @get("/analytics")
    async def analytics(self, request: Request, start: str = "", end: str = "", user: str = "") -> Template:
        now = time.time()
        rng, first, last = parse_range(start, end, user, now)
        conn = db(request)
        data = await queries.tables(conn, rng)
        total = sum(r[1] for r in data["status"])
        lat = await queries.latency(conn, rng, total)
        per_day, tokens = _day_charts(data["daily"], first, last, now)
        svg = {
            "hourly": _hours_chart(data["hourly"], rng, now),
            "daily": per_day,
            "tokens": tokens,
            "models": charts.bars(
                "Requests by model", [(r[0] or "(none)", r[1]) for r in data["models"][:15]], unit="requests"
            ),
            "backends": charts.bars(
                "Requests by backend",
                [(r[0] or "(none)", r[1]) for r in data["backends"][:15]],
                unit="requests",
            ),
            "status": charts.bars(
                "Responses by status code",
                [(_status_label(r[0]), r[1]) for r in data["status"]],
                unit="responses",
                css=["bad" if r[0] >= 400 else "" for r in data["status"]],
            ),
        }
        query = urlencode(
            {"start": first.isoformat(), "end": last.isoformat(), **({"user": user} if user else {})}
        )
        return page(
            request,
            "analytics.html",
            data=data,
            svg=svg,
            latency=lat,
            total=total,
            first=first,
            last=last,
            user=user,
            query=query,
            files={name: filename(name, user, first, last) for name in svg},
        )

    @get("/analytics/csv/{name:str}")
    async def export(
        self, request: Request, name: str, start: str = "", end: str = "", user: str = ""
    ) -> Response:
        if name not in HEADERS:
            raise NotFoundException(f"no table named {name!r}")
        rng, first, last = parse_range(start, end, user, time.time())
        rows = (await queries.tables(db(request), rng))[name]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADERS[name])
        writer.writerows(rows)
        return Response(
            content=out.getvalue(),
            media_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="{filename(name, user, first, last)}.csv"'
            },
        )
