"""IP trust sessions (`POST /auth`, `DELETE /auth`) from a node: asked of the control node through Redis.

A session is configuration: the control node's database holds it, and every node learns it from the
published snapshot, as a key. A node has no database, so its proxy hands the request to the control
process (one list, `fortress:trust:requests`) and waits for the answer on a key of its own. The control
process (`serve()`) stores the session in SQLite with fortress.state.trust, exactly as a single gateway
does (same rows, same audit lines), publishes the snapshot that holds it, then answers. So when
`POST /auth` returns 200 on a node the session is already in Redis's snapshot: the node's own check
before answering takes it, and every other node has it at its next notice (or parks a keyless request
from that address for one configuration check, fortress.proxy.freshness, as a single gateway's other
workers do).

While the control process or Redis is away the node answers 503 ("try again") after WAIT_S: a
session is never half made. A request the control node finds after its deadline (it was down) is
dropped unanswered: the client was already told to try again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fortress.state import trust

if TYPE_CHECKING:
    import aiosqlite
    import redis.asyncio

log = logging.getLogger("fortress.cluster")
REQUESTS = "fortress:trust:requests"
REPLY_PREFIX = "fortress:trust:reply:"
WAIT_S = 3.0  # how long a node waits for the control node's answer
REPLY_TTL_S = 30  # an answer nobody collects is gone after this


class TrustUnavailable(RuntimeError):
    """The control node did not answer in time: nothing was stored."""


class RemoteTrust:
    """A node's worker.TrustStore: each call is one request to the control process and its answer.

    `client` must allow blocking reads of WAIT_S (fortress.cluster.link.async_client(url, timeout_s=...)).
    """

    def __init__(self, client: redis.asyncio.Redis, node: str) -> None:
        self.client = client
        self.node = node

    async def start(self, ip: str, key_id: str, ttl_s: float) -> float:
        return float((await self._ask({"op": "start", "ip": ip, "key_id": key_id, "ttl_s": ttl_s}))["until"])

    async def end(self, ip: str, key_id: str) -> bool:
        return bool((await self._ask({"op": "end", "ip": ip, "key_id": key_id}))["ended"])

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        reply = f"{REPLY_PREFIX}{self.node}:{os.urandom(8).hex()}"
        request = {**request, "reply": reply, "deadline": time.time() + WAIT_S, "node": self.node}
        await self.client.rpush(REQUESTS, json.dumps(request))
        answer = await self.client.blpop([reply], timeout=WAIT_S)
        if answer is None:
            raise TrustUnavailable(f"the control node did not answer within {WAIT_S:g} s")
        out = json.loads(answer[1])
        if "error" in out:
            raise TrustUnavailable(out["error"])
        return out


async def serve_one(
    client: redis.asyncio.Redis,
    reader: redis.asyncio.Redis,
    db: aiosqlite.Connection,
    published: Callable[[], Awaitable[object]],
    block_s: float,
) -> bool:
    """Take one request (waiting up to `block_s`), store it, run `published()` (the publisher's step:
    the snapshot in Redis holds the session before the node hears back), answer. False: none came."""
    item = await reader.blpop([REQUESTS], timeout=block_s)
    if item is None:
        return False
    try:
        request = json.loads(item[1])
        reply, op, ip, key_id = request["reply"], request["op"], request["ip"], request["key_id"]
        deadline = float(request["deadline"])
    except (ValueError, KeyError, TypeError):
        log.error("a trust session request that is not one was dropped")
        return True
    if time.time() > deadline:  # the node has answered 503 already
        return True
    try:
        if op == "start":
            answer: dict[str, Any] = {"until": await trust.start(db, ip, key_id, float(request["ttl_s"]))}
        else:
            ended = await trust.end(db, ip, key_id=key_id, actor=f"key {key_id}", from_ip=ip)
            answer = {"ended": ended}
        await published()
    except Exception as exc:  # a busy database: the node says 503, the client tries again
        log.warning("IP trust session for %s from node %s not stored: %s", ip, request.get("node"), exc)
        answer = {"error": "the control node could not store the session"}
    async with client.pipeline(transaction=True) as pipe:
        pipe.rpush(reply, json.dumps(answer)).expire(reply, REPLY_TTL_S)
        await pipe.execute()
    return True
