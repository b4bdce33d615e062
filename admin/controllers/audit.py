"""The audit log: every admin action with who, when, what and from where, newest first."""

from __future__ import annotations

from litestar import Controller, Request, get
from litestar.response import Template

from admin import queries
from admin.web import db, page

PAGE_SIZE = 100


class AuditController(Controller):
    @get("/audit")
    async def audit(self, request: Request, q: str = "", before: float | None = None) -> Template:
        rows = await queries.list_audit(db(request), limit=PAGE_SIZE, before=before, q=q[:100])
        more = rows[-1].ts if len(rows) == PAGE_SIZE else None
        return page(request, "audit.html", rows=rows, q=q, more=more)
