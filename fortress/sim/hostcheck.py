"""Ollama's DNS-rebinding guard (allowedHostsMiddleware): which Host headers a loopback listener accepts."""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def strip_port(host: str) -> str:
    """'example:80' -> 'example', '[::1]:80' -> '::1', '::1' stays (a bare IPv6 has no port)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name
    return host


@lru_cache(maxsize=1024)
def host_allowed(host_header: str, hostname: str | None = None) -> bool:
    """True when Ollama on loopback would serve a request carrying this Host header (memoised: clients
    send the same few values, and parsing IPs costs a quarter of a small request)."""
    host = strip_port(host_header.strip()).lower()
    if not host or host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        return True
    if host == (hostname if hostname is not None else socket.gethostname()).lower():
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


def is_loopback_listener(bind_host: str) -> bool:
    """Ollama checks Host only when it listens on a loopback address."""
    if bind_host == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind_host).is_loopback
    except ValueError:
        return False
