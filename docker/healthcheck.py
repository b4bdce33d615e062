"""Container health check: GET /health on the proxy (HTTP, else HTTPS); exit 0 only on 200.

/health answers 503 when no backend is healthy, so an unhealthy container means clients cannot be
served (Fortress down, or Ollama unreachable), not only a dead process.
"""

from __future__ import annotations

import http.client
import ssl
import sys

from fortress.addr import parse_listen
from fortress.config import load


def status(host: str, port: int, tls: bool) -> int:
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the health of the service, not of its certificate
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=4, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=4)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def main() -> int:
    host, port = parse_listen(load().proxy.listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    for tls in (False, True):
        try:
            code = status(host, port, tls)
        except (OSError, http.client.HTTPException):
            continue
        print(f"/health: {code}")
        return 0 if code == 200 else 1
    print(f"/health: no answer on {host}:{port}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
