"""Analytics: requests per hour and day, tokens, models, backends, latency, status codes;
a UTC date range, an optional user, SVG charts drawn here, and the CSV behind every chart."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, date, datetime, timedelta

from litestar import Controller, Request, get
from litestar.exceptions import NotFoundException, ValidationException
from litestar.response import Response, Template

from admin import charts, queries
from admin.queries import HEADERS, Range
from admin.web import db, page

DEFAULT_DAYS = 7
MAX_DAYS = 3660


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
    epoch_day = date(1970, 1, 1)
    rng = Range((first - epoch_day).days * 24, ((last - epoch_day).days + 1) * 24, user)
    return rng, first, last


def _hour_label(hour_start: int) -> str:
    return datetime.fromtimestamp(hour_start, UTC).strftime("%m-%d %Hh")


class AnalyticsController(Controller):
    @get("/analytics")
    async def analytics(self, request: Request, start: str = "", end: str = "", user: str = "") -> Template:
        rng, first, last = parse_range(start, end, user, time.time())
        conn = db(request)
        data = await queries.tables(conn, rng)
        total = sum(r[1] for r in data["status"])
        lat = await queries.latency(conn, rng, total)
        svg = {
            "hourly": charts.columns(
                "Requests per hour", [(_hour_label(r[0]), r[1]) for r in data["hourly"]]
            ),
            "daily": charts.columns("Requests per day", [(r[0][5:], r[1]) for r in data["daily"]]),
            "tokens": charts.columns(
                "Tokens per day (prompt + completion)",
                [(r[0][5:], (r[3] or 0) + (r[4] or 0)) for r in data["daily"]],
            ),
            "models": charts.bars(
                "Requests by model", [(r[0] or "(none)", r[1]) for r in data["models"][:15]]
            ),
            "backends": charts.bars(
                "Requests by backend", [(r[0] or "(none)", r[1]) for r in data["backends"][:15]]
            ),
            "status": charts.bars("Responses by status code", [(str(r[0]), r[1]) for r in data["status"]]),
        }
        query = f"start={first.isoformat()}&end={last.isoformat()}" + (f"&user={user}" if user else "")
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
        suffix = f"-{user}" if user else ""
        filename = f"fortress-{name}{suffix}-{first.isoformat()}-{last.isoformat()}.csv"
        return Response(
            content=out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
