"""The admin's way to the proxy for the playground: the same door, key and policy as any client.

Pages never hold a key in JavaScript and the proxy needs no CORS: the browser posts to the admin
(session + CSRF), the admin calls the proxy at [proxy] listen with the key, and chat streams are passed
through byte for byte as they arrive. A browser that goes away cancels the handler, which closes the
proxy connection, which makes the proxy stop its backend (end to end). Failures become one clear
sentence: an `{"error": ...}` line at the end of a stream, or RelayError elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httpx

from fortress.addr import parse_listen
from fortress.config import Config
from fortress.proxy.tls import effective_files

USER_AGENT = "fortress-admin-playground"
_PEM_END = "-----END CERTIFICATE-----"


class RelayError(Exception):
    """The proxy could not be reached or refused the request; str() is the sentence to show."""


@dataclass(frozen=True)
class Proxy:
    """Where the proxy listens, how to trust it, and how long a stream may stay silent."""

    url: str
    cert_file: str  # the proxy's own certificate (PEM), "" for plain HTTP
    stream_idle_s: float


def for_config(cfg: Config, settings: Mapping[str, str] | None = None) -> Proxy:
    """The proxy as `cfg` and the settings rows describe it (a certificate set in /settings wins)."""
    host, port = parse_listen(cfg.proxy.listen, "proxy.listen")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    tls = effective_files(cfg, settings or {})
    # the proxy gives up on a silent backend after first_byte_timeout_s and says so in the stream;
    # the relay waits a little longer, so that message is what the user sees
    idle = cfg.routing.first_byte_timeout_s + 15
    return Proxy(f"{'https' if tls else 'http'}://{host}:{port}", tls.cert if tls else "", idle)


def tls_context(cert_file: str) -> ssl.SSLContext:
    """Trust exactly the proxy's own (first) certificate, read now so a replaced certificate is seen.

    Only that leaf is a trust anchor (never intermediates from the same file), so no other certificate
    passes; the host name is therefore not checked: the proxy is dialled at its listen address, which a
    certificate made for its public name does not list.
    """
    with open(cert_file, encoding="ascii", errors="replace") as f:
        pem = f.read()
    end = pem.find(_PEM_END)
    if end < 0:
        raise RelayError(f"the proxy's certificate file {cert_file} holds no certificate")
    ctx = ssl.create_default_context(cadata=pem[: end + len(_PEM_END)])
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.check_hostname = False
    return ctx


def _client(proxy: Proxy, timeout: httpx.Timeout) -> httpx.AsyncClient:
    try:
        verify: ssl.SSLContext | bool = tls_context(proxy.cert_file) if proxy.cert_file else False
    except OSError as exc:
        raise RelayError(f"cannot read the proxy's certificate: {exc.strerror}") from None
    return httpx.AsyncClient(base_url=proxy.url, verify=verify, timeout=timeout, trust_env=False)


def _headers(key: str, client_ip: str) -> dict[str, str]:
    # X-Forwarded-For counts only if the proxy trusts the admin's address ([proxy] trusted_proxies);
    # then IP policy and usage see the browser's address instead of the admin's
    headers = {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT}
    if client_ip:
        headers["X-Forwarded-For"] = client_ip
    return headers


def explain(status: int, body: str, headers: Mapping[str, str]) -> str:
    """One sentence for a refusal by the proxy (or a backend behind it), keeping the proxy's own words."""
    try:
        detail = json.loads(body).get("error", "")
        if isinstance(detail, dict):  # OpenAI's shape
            detail = detail.get("message", "")
    except (ValueError, AttributeError):
        detail = body.strip()
    detail = str(detail)[:300]
    if status == 401:
        return (
            "the proxy refused the key (unknown, disabled, revoked or expired): create or paste another key"
        )
    if status == 429:
        retry = headers.get("retry-after")
        wait = f" Try again in {retry} s." if retry else ""
        return f"rate limit reached for this key: {detail or 'too many requests'}.{wait}"
    if status == 413:
        return "the request is larger than the proxy accepts (max_body_bytes): attach smaller images"
    if status == 403:
        return f"refused by the proxy's policy: {detail or 'forbidden'}"
    if status in (502, 503, 504):
        return f"no backend could answer (HTTP {status}): {detail or 'backend unavailable'}"
    return f"{detail} (HTTP {status})" if detail else f"the proxy answered HTTP {status}"


def reason(exc: Exception, proxy: Proxy) -> str:
    """A transport failure as one sentence."""
    if isinstance(exc, httpx.TimeoutException):
        return f"the proxy at {proxy.url} did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        if "SSL" in str(exc) or "certificate" in str(exc):
            return f"TLS to the proxy at {proxy.url} failed: its certificate is not the configured one"
        return f"the proxy at {proxy.url} is not reachable (is `fortress serve` running?)"
    if isinstance(exc, RelayError):
        return str(exc)
    return f"the connection to the proxy at {proxy.url} broke ({type(exc).__name__})"


def error_line(message: str) -> bytes:
    """The last line of a relayed stream that failed, in Ollama's own shape."""
    return json.dumps({"error": message}).encode() + b"\n"


async def _call(proxy: Proxy, method: str, path: str, key: str, client_ip: str, **kw: object) -> object:
    try:
        async with _client(proxy, httpx.Timeout(120.0, connect=5.0)) as c:
            r = await c.request(method, path, headers=_headers(key, client_ip), **kw)  # type: ignore[arg-type]
    except (httpx.HTTPError, RelayError) as exc:
        raise RelayError(reason(exc, proxy)) from None
    if r.status_code != 200:
        raise RelayError(explain(r.status_code, r.text, r.headers))
    try:
        return r.json()
    except ValueError:
        raise RelayError("the proxy sent an answer that is not JSON") from None


async def wait_for_key(proxy: Proxy, key: str, seconds: float = 2.0) -> None:
    """Give the proxy its reload interval (DESIGN §1: under a second) to learn a key just created.

    Returns when the key is accepted, refused for another reason, the proxy is unreachable, or time is up.
    """
    deadline = time.monotonic() + seconds
    try:
        async with _client(proxy, httpx.Timeout(2.0, connect=2.0)) as c:
            while True:
                r = await c.get("/api/version", headers=_headers(key, ""))
                if r.status_code != 401 or time.monotonic() > deadline:
                    return
                await asyncio.sleep(0.1)
    except (httpx.HTTPError, RelayError):
        return  # the page that follows names the problem


async def models(proxy: Proxy, key: str, client_ip: str = "") -> list[dict]:
    """The models this key may use (the proxy filters /api/tags by the key's allow-list), by name."""
    data = await _call(proxy, "GET", "/api/tags", key, client_ip)
    found = data.get("models") if isinstance(data, dict) else None
    if not isinstance(found, list):
        raise RelayError("the proxy's model list is malformed")
    return sorted((m for m in found if isinstance(m, dict) and m.get("name")), key=lambda m: m["name"])


async def embed(
    proxy: Proxy, key: str, model: str, texts: list[str], client_ip: str = ""
) -> list[list[float]]:
    """One vector per text from /api/embed (one request for all of them)."""
    data = await _call(proxy, "POST", "/api/embed", key, client_ip, json={"model": model, "input": texts})
    vectors = data.get("embeddings") if isinstance(data, dict) else None
    if not isinstance(vectors, list) or len(vectors) != len(texts):
        raise RelayError(f"{model} did not return one embedding per text")
    if not all(isinstance(v, list) and v and all(isinstance(x, int | float) for x in v) for v in vectors):
        raise RelayError(f"{model} returned embeddings that are not lists of numbers")
    if len({len(v) for v in vectors}) != 1:
        raise RelayError(f"{model} returned embeddings of different lengths")
    return vectors


async def web_search(proxy: Proxy, key: str, query: str, max_results: int, client_ip: str = "") -> object:
    """The proxy's /api/web_search answer (the key needs the search scope)."""
    body = {"query": query, "max_results": max_results}
    try:
        return await _call(proxy, "POST", "/api/web_search", key, client_ip, json=body)
    except RelayError as exc:
        raise RelayError(f"web search failed: {exc}") from None


async def chat(proxy: Proxy, key: str, body: dict, client_ip: str = "") -> AsyncIterator[bytes]:
    """The proxy's /api/chat NDJSON stream as it arrives; a failure ends it with one error line."""
    timeout = httpx.Timeout(30.0, connect=5.0, read=proxy.stream_idle_s)
    try:
        async with (
            _client(proxy, timeout) as c,
            c.stream("POST", "/api/chat", json=body, headers=_headers(key, client_ip)) as r,
        ):
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                yield error_line(explain(r.status_code, text, r.headers))
                return
            async for chunk in r.aiter_raw():
                yield chunk
    except (httpx.HTTPError, RelayError) as exc:
        yield b"\n" + error_line(reason(exc, proxy))  # the newline ends a line the cut left open
