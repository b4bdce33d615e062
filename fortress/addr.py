"""Listen-address parsing shared by the proxy, the admin and the simulator."""

from __future__ import annotations


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
