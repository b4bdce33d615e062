"""IP trust sessions (POST /auth on the proxy): who is trusted, from which address, until when; end one.

The list is shown on the dashboard (`_trust.html`); ending a session deletes its row, which bumps
config_version, so every proxy worker stops trusting the address within a second. Audited.
"""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.response import Response

from admin.web import db, form, ip, me, see_other
from fortress.state import trust


class TrustController(Controller):
    @post("/trust/end")
    async def end(self, request: Request) -> Response:
        address = (await form(request)).get("ip", "")
        await trust.end(db(request), address, key_id=None, actor=me(request).name, from_ip=ip(request))
        return see_other(request, "/#trust")
