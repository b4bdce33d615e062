"""A throwaway Ollama look-alike for poller tests: canned /api/version, /api/tags, /api/ps answers.

Real sockets on a loopback port chosen by the OS; its state is mutable so a test can change what the
backend holds, make it fail, or make it hang. It records every request line and Host header it sees.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field

from .helpers import ps, tags


@dataclass
class Canned:
    models: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    version: str = "0.12.6"
    status: int = 200  # answer every request with this status (500: a sick backend)
    hang: bool = False  # accept and read, never answer
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, host)
    connections: int = 0
    server: asyncio.Server | None = None
    port: int = 0
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self, tls: ssl.SSLContext | None = None) -> Canned:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):  # Python 3.11 servers leave accepted connections open
                writer.close()
            await self.server.wait_closed()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def _body(self, path: str) -> bytes:
        if path == "/api/version":
            return json.dumps({"version": self.version}).encode()
        if path == "/api/tags":
            return json.dumps(tags(*self.models)).encode()
        if path == "/api/ps":
            return json.dumps(ps(*self.loaded)).encode()
        return b"404 page not found"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                self.seen.append((method, path, headers.get("Host", "")))
                if self.hang:
                    await asyncio.sleep(3600)
                body = self._body(path)
                status = self.status if body[:1] == b"{" else 404
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (status, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
