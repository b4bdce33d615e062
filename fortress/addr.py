"""Addresses: listen-address parsing, and backend URLs that carry a user and password."""

from __future__ import annotations

import base64
from urllib.parse import unquote, urlsplit, urlunsplit


def parse_listen(text: str, where: str = "listen") -> tuple[str, int]:
    """'127.0.0.1:8080' or '[::1]:8080' -> (host, port); ValueError names `where`."""
    from fortress.config import ConfigError

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"{where}: expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 <= number <= 65535:
        raise ConfigError(f"{where}: port out of range in {text!r}")
    return host, number


def url_credentials(url: str) -> tuple[str, str]:
    """Split `http://user:pass@host/...` into the URL without them and a Basic authorization value."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, ""
    token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])), f"Basic {token}"


def redact_url(url: str) -> str:
    """The URL as it may be printed: a password in it becomes ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}"))
