"""Web search and page fetch over the network: the thin I/O layer around shapes, target and page.

Search: SearXNG's JSON API first (`GET <searxng_url>/search?q=...&format=json`), then Ollama's
hosted web search (`POST <ollama_url>/api/web_search` with `Authorization: Bearer <key>`), each
within `timeout_s`; the first real answer wins, in Ollama's shape.

Fetch: httpx, chosen over a hand-written h11 client because it already does HTTP/1.1 framing, TLS
and chunked bodies well, and three settings make it safe here: every hop's host is resolved once by
us, each address checked by `target`, and the request sent to the checked IP literal (httpx does no
DNS for an IP; `Host` and the TLS server name carry the real name, so certificates are still
verified against it); `trust_env=False`, so no proxy from the environment connects elsewhere; no
automatic redirects, so each Location goes through the same checks (at most MAX_REDIRECTS). A fresh
client per hop keeps a connection opened for one name from ever carrying another's request. Bodies
are read raw and inflated here with a bound, so a compressed bomb costs at most `max_fetch_bytes`.

This runs inside a proxy worker's event loop: what costs CPU in proportion to an answer's size
(JSON decoding of a source's answer, reading a page's HTML into text) runs in a thread, so a large
page never stalls the requests the worker relays meanwhile.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import ssl
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urljoin

import httpx

from fortress.config import SearchConfig
from fortress.search import page, shapes
from fortress.search.errors import SearchError
from fortress.search.target import (
    IPAddress,
    Target,
    addresses_for,
    check_addresses,
    compile_allow,
    parse_target,
)

Resolver = Callable[[str, int], Awaitable[list[str]]]  # (host, port) -> addresses, as getaddrinfo
MAX_REDIRECTS = 5
MAX_ANSWER = 4 * 1024 * 1024  # a search source's JSON answer
USER_AGENT = "Fortress-web_fetch/1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HTML = ("text/html", "application/xhtml+xml")
_TEXT = ("text/", "application/json", "application/xml", "application/ld+json")


async def system_resolver(host: str, port: int) -> list[str]:
    """The system resolver (getaddrinfo, off the event loop), each address once."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _read(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The body, inflated if gzip/deflate, cut at `limit` bytes; (bytes, cut)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    inflate = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflate = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
    elif encoding not in ("", "identity"):
        raise SearchError(502, f"unsupported content encoding {encoding[:40]!r}")
    out = bytearray()
    async for chunk in response.aiter_raw():
        if inflate is not None:
            try:
                chunk = inflate.decompress(chunk, limit - len(out) + 1)
            except zlib.error:
                raise SearchError(502, "the page's compressed body is corrupt") from None
        out += chunk
        if len(out) > limit:
            return bytes(out[:limit]), True
    return bytes(out), False


def _ip_url(target: Target, ip: IPAddress) -> str:
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{target.scheme}://{host}:{target.port}{target.path}"


class WebSearch:
    """POST /api/web_search and /api/web_fetch's work for one process; `aclose()` when done."""

    def __init__(
        self,
        cfg: SearchConfig,
        *,
        environ: Mapping[str, str] = os.environ,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.cfg = cfg
        self._key = environ.get(cfg.ollama_key_env, "") if cfg.ollama_key_env else ""
        self._allow = compile_allow(cfg.fetch_allow)
        self._resolver = resolver
        self._tls = ssl.create_default_context()  # the system's CAs; built once, shared by every client
        self._client = self._new_client()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.cfg.timeout_s,
            trust_env=False,
            follow_redirects=False,
            verify=self._tls,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},  # what _read inflates
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- search ---------------------------------------------------------------------------------------
    async def search(self, query: str, max_results: int) -> dict[str, Any]:
        """Ollama's web_search answer from the first source that answers; SearchError otherwise."""
        sources: list[tuple[str, Callable[[str, int], Awaitable[dict[str, Any]]]]] = []
        if self.cfg.searxng_url:
            sources.append(("searxng", self._searxng))
        if self.cfg.ollama_key_env:
            sources.append(("ollama.com", self._hosted))
        if not sources:
            raise SearchError(404, "web search is not configured on this gateway")
        failures: list[str] = []
        timeouts = 0
        for name, source in sources:
            try:
                async with asyncio.timeout(self.cfg.timeout_s):
                    return await source(query, max_results)
            except TimeoutError:
                timeouts += 1
                failures.append(f"{name}: no answer within {self.cfg.timeout_s:g}s")
            except (httpx.HTTPError, SearchError, ValueError) as exc:
                failures.append(f"{name}: {_why(exc)}")
        raise SearchError(
            504 if timeouts == len(sources) else 502, "web_search failed: " + "; ".join(failures)
        )

    async def _json(self, request: httpx.Request) -> Any:
        response = await self._client.send(request, stream=True)
        try:
            if response.status_code != 200:
                hint = " (is json in its search.formats?)" if response.status_code == 403 else ""
                raise ValueError(f"HTTP {response.status_code}{hint}")
            body, cut = await _read(response, MAX_ANSWER)
        finally:
            await response.aclose()
        if cut:
            raise ValueError(f"answer larger than {MAX_ANSWER} bytes")
        return await asyncio.to_thread(json.loads, body)

    async def _searxng(self, query: str, limit: int) -> dict[str, Any]:
        request = self._client.build_request(
            "GET",
            self.cfg.searxng_url.rstrip("/") + "/search",
            params={"q": query, "format": "json"},
            headers={"Accept": "application/json"},
        )
        return shapes.from_searxng(await self._json(request), limit)

    async def _hosted(self, query: str, limit: int) -> dict[str, Any]:
        if not self._key:
            raise ValueError(f"the environment variable {self.cfg.ollama_key_env} is empty")
        request = self._client.build_request(
            "POST",
            self.cfg.ollama_url.rstrip("/") + "/api/web_search",
            json={"query": query, "max_results": limit},
            headers={"Authorization": f"Bearer {self._key}", "Accept": "application/json"},
        )
        return shapes.from_ollama(await self._json(request), limit)

    # -- fetch ----------------------------------------------------------------------------------------
    async def fetch(self, url: str) -> dict[str, Any]:
        """Ollama's web_fetch answer ({"title", "content", "links"}) for `url`; SearchError otherwise."""
        if not self.cfg.enabled:
            raise SearchError(404, "web fetch is not configured on this gateway")
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                current = url
                for _ in range(MAX_REDIRECTS + 1):
                    target = parse_target(current)
                    answer = await self._hop(target, await self._addresses(target))
                    if isinstance(answer, dict):
                        return answer
                    current = urljoin(target.url, answer)
        except TimeoutError:
            raise SearchError(504, f"web_fetch: no answer within {self.cfg.timeout_s:g}s") from None
        raise SearchError(502, f"web_fetch: more than {MAX_REDIRECTS} redirects")

    async def _addresses(self, target: Target) -> list[IPAddress]:
        """Resolve once and check every address; the connection uses these, never the name again."""
        known = addresses_for(target)
        if known is None:
            try:
                found = await self._resolver(target.host, target.port)
            except OSError as exc:
                raise SearchError(502, f"web_fetch: cannot resolve {target.host}: {_why(exc)}") from None
            known = tuple(ipaddress.ip_address(a) for a in found)
        if not known:
            raise SearchError(502, f"web_fetch: {target.host} has no address")
        check_addresses(target, known, self._allow)
        return list(known)

    async def _hop(self, target: Target, addresses: list[IPAddress]) -> dict[str, Any] | str:
        """GET one URL at the first address that connects: the page's answer, or a redirect's Location."""
        headers = {
            "Host": target.authority,
            "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1",
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" and target.ip is None else {}
        failure = ""
        async with self._new_client() as client:
            for ip in addresses:
                request = client.build_request(
                    "GET", _ip_url(target, ip), headers=headers, extensions=extensions
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.TransportError as exc:
                    failure = _why(exc)
                    continue
                try:
                    return await self._answer(target, response)
                except httpx.TransportError as exc:
                    raise SearchError(502, f"web_fetch: {target.host}: {_why(exc)}") from None
                finally:
                    await response.aclose()
        raise SearchError(502, f"web_fetch: cannot connect to {target.host}: {failure}")

    async def _answer(self, target: Target, response: httpx.Response) -> dict[str, Any] | str:
        status = response.status_code
        if status in _REDIRECTS:
            location = response.headers.get("location", "").strip()
            if not location:
                raise SearchError(502, f"web_fetch: {target.url} redirected without a Location")
            return location
        if not 200 <= status < 300:
            raise SearchError(502, f"web_fetch: {target.url} answered HTTP {status}")
        content_type = response.headers.get("content-type", "text/html")
        media = content_type.split(";")[0].strip().lower()
        if not media.startswith(_HTML + _TEXT):
            raise SearchError(502, f"web_fetch: cannot read {media or 'untyped'} content, only HTML and text")
        body, _ = await _read(response, self.cfg.max_fetch_bytes)
        return await asyncio.to_thread(_read_page, body, content_type, media.startswith(_HTML), target.url)


def _read_page(body: bytes, content_type: str, html: bool, url: str) -> dict[str, Any]:
    """A page's bytes as web_fetch's answer (in a thread: parsing is CPU work in the page's size)."""
    text = page.decode(body, page.charset_of(content_type, body))
    return page.read_html(text, url) if html else page.read_text(text)


def _why(exc: BaseException) -> str:
    """An exception as a short phrase for a client (no URLs with credentials: we never send any)."""
    if isinstance(exc, SearchError):
        return exc.message
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
