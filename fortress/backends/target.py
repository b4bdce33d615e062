"""How to reach one backend: the single description the proxy, the poller, the admin and the CLI use.

Built once per backend when configuration loads (never per request): address, TLS context (with the
backend's own CA bundle), the Host header it accepts, its URL's path prefix, and the authentication
header lines its kind asks for, rendered once as bytes for the hot path and as pairs for control calls.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fortress.addr import redact_url, url_credentials
from fortress.backends.kind import BackendKind, kind_named

if TYPE_CHECKING:
    from fortress.state.snapshot import BackendRecord


def tls_context(ca_bundle: str = "") -> ssl.SSLContext:
    """Certificate and host name checked, against the system store or the backend's own CA bundle."""
    context = ssl.create_default_context(cafile=ca_bundle or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True, slots=True, eq=False)
class Target:
    name: str
    kind: BackendKind
    host: str
    port: int
    ssl: ssl.SSLContext | None
    host_header: bytes  # the URL's own host[:port]: Ollama on loopback refuses any other Host
    prefix: bytes  # the URL's path without a trailing slash, prepended to every path sent
    auth: tuple[tuple[str, str], ...]  # the kind's authentication headers
    auth_lines: bytes  # the same, rendered as "Name: value\r\n" lines for the hot path
    url: str  # without user:pass
    endpoint: tuple[str, str, str, str]  # (url, credential, ca_bundle, type): what a change must restart

    @classmethod
    def from_record(cls, b: BackendRecord) -> Target:
        """ValueError for a URL that is not http(s) or a type no kind is registered for."""
        kind = kind_named(b.type)
        url, basic = url_credentials(b.url)
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"backend {b.name}: not an http(s) URL: {redact_url(b.url)!r}")
        tls = u.scheme == "https"
        auth = kind.auth(b.credential, basic)
        return cls(
            name=b.name,
            kind=kind,
            host=u.hostname,
            port=u.port or (443 if tls else 80),
            ssl=tls_context(b.ca_bundle) if tls else None,
            host_header=u.netloc.encode(),
            prefix=u.path.rstrip("/").encode(),
            auth=auth,
            auth_lines=b"".join(f"{name}: {value}\r\n".encode() for name, value in auth),
            url=url,
            endpoint=(b.url, b.credential, b.ca_bundle, b.type),
        )

    def __repr__(self) -> str:  # never the credential
        return f"<Target {self.name} {self.kind.name} {self.url}>"
