"""Help: creating a key and calling the proxy from curl, Python clients, Open WebUI and LangChain."""

from __future__ import annotations

from collections.abc import Mapping

from litestar import Controller, Request, get
from litestar.response import Template

from admin.web import cfg, db, page
from fortress.addr import parse_listen
from fortress.proxy.tls import effective_files
from fortress.state import repo


def proxy_url(request: Request, settings: Mapping[str, str]) -> str:
    """The proxy's base URL as clients should use it (loopback listens are shown as such); HTTPS when a
    certificate is in force (config.toml's, or one set in /settings: `settings` are its rows)."""
    config = cfg(request)
    host, port = parse_listen(config.proxy.listen, "proxy.listen")
    if host in ("0.0.0.0", "::", ""):
        host = request.url.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if effective_files(config, settings) else "http"
    return f"{scheme}://{host}:{port}"


class HelpController(Controller):
    @get("/help")
    async def help(self, request: Request) -> Template:
        return page(request, "help.html", proxy=proxy_url(request, await repo.get_settings(db(request))))
