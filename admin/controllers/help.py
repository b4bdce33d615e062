"""Help: creating a key and calling the proxy from curl, Python clients, Open WebUI and LangChain."""

from __future__ import annotations

from litestar import Controller, Request, get
from litestar.response import Template

from admin.web import cfg, page
from fortress.addr import parse_listen


def proxy_url(request: Request) -> str:
    """The proxy's base URL as clients should use it (loopback listens are shown as such)."""
    config = cfg(request)
    host, port = parse_listen(config.proxy.listen, "proxy.listen")
    if host in ("0.0.0.0", "::", ""):
        host = request.url.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.proxy.tls_cert else "http"
    return f"{scheme}://{host}:{port}"


class HelpController(Controller):
    @get("/help")
    async def help(self, request: Request) -> Template:
        return page(request, "help.html", proxy=proxy_url(request))
