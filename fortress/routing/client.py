"""A small HTTP/1.1 GET client for control-plane calls to a backend (h11 over asyncio streams).

Only for short JSON answers (/api/version, /api/tags, /api/ps): one connection per backend, kept
alive between polls when the backend allows it, a hard timeout per call and a cap on the answer size.
The hot path has its own pool; this client never carries client traffic and never runs inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11

MAX_BODY = 16 * 1024 * 1024  # a /api/tags of thousands of models is a few MiB at most


class ControlError(Exception):
    """A control-plane call failed: connect error, TLS error, timeout, broken or oversized answer."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        """The parsed body; ValueError if it is not JSON."""
        return json.loads(self.body)


class ControlClient:
    """GETs against one backend base URL (http or https, optional CA bundle, optional credential)."""

    def __init__(
        self,
        url: str,
        *,
        credential: str = "",
        ca_bundle: str = "",
        timeout_s: float = 3.0,
        keep_alive: bool = True,
        max_body: int = MAX_BODY,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=ca_bundle or None) if parts.scheme == "https" else None
        self._headers = [
            ("Host", parts.netloc.rpartition("@")[2]),  # the backend's own host (Ollama's rebinding guard)
            ("User-Agent", "fortress-control"),
            ("Accept", "application/json"),
        ]
        if credential:
            self._headers.append(("Authorization", f"Bearer {credential}"))
        if not keep_alive:
            self._headers.append(("Connection", "close"))
        self._keep_alive = keep_alive
        self._timeout_s = timeout_s
        self._max_body = max_body
        self._conn: h11.Connection | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> Reply:
        """GET prefix+path within the timeout; ControlError on any failure.

        A kept-alive connection the backend closed meanwhile is retried once on a fresh one.
        """
        try:
            async with asyncio.timeout(self._timeout_s):
                reused = self._conn is not None
                try:
                    return await self._exchange(path)
                except (OSError, h11.ProtocolError):
                    self._drop()
                    if not reused:
                        raise
                return await self._exchange(path)
        except TimeoutError:
            self._drop()
            raise ControlError(f"GET {path}: no answer within {self._timeout_s:g}s") from None
        except (OSError, h11.ProtocolError) as exc:
            self._drop()
            raise ControlError(f"GET {path}: {type(exc).__name__}: {exc}") from None
        except ControlError:
            self._drop()
            raise

    async def _exchange(self, path: str) -> Reply:
        if self._conn is None:
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._ssl else None
            )
            self._conn = h11.Connection(h11.CLIENT)
        conn, reader, writer = self._conn, self._reader, self._writer
        assert reader is not None and writer is not None
        writer.write(conn.send(h11.Request(method="GET", target=self._prefix + path, headers=self._headers)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        status = 0
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_body:
                    raise ControlError(f"GET {path}: answer larger than {self._max_body} bytes")
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed before the answer ended")
        if self._keep_alive and conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self._drop()
        return Reply(status, b"".join(chunks))

    def _drop(self) -> None:
        """Forget the connection; the transport closes in the background."""
        writer, self._conn, self._reader, self._writer = self._writer, None, None, None
        if writer is not None:
            writer.close()

    async def aclose(self) -> None:
        writer = self._writer
        self._drop()
        if writer is not None:
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
