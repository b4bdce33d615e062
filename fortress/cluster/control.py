"""The control node's cluster process: publish the snapshot, store the nodes' usage, fold their heartbeats.

`python -m fortress.cluster.control --config PATH` on the machine with `role = "control"` (the one
holding the database; `fortress run` starts it there beside the proxy and the admin). It is its own
process so that a crash or a SIGKILL costs only a restart: the publisher republishes on start, the
consumer re-reads its pending entries, and nothing the proxy or the admin does waits on it.

Tasks: the lease (fortress.cluster.lease) is kept every second and gates publishing, consuming and
trust sessions; the publisher steps every POLL_S; the consumer reads the usage stream; heartbeats are
folded into proxy_stats every second; nodes' IP trust sessions are stored and published on arrival
(fortress.cluster.trust). Redis outages are logged once each and retried; the process never exits
because Redis is away. SIGTERM/SIGINT stop it after the batch in hand is stored and acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis

from fortress.cluster.consumer import BLOCK_MS, CLAIM_IDLE_S, UsageConsumer
from fortress.cluster.lease import Lease
from fortress.cluster.link import SNAPSHOT_WANTED, TIMEOUT_S, Reachability, async_client, stop_tasks
from fortress.cluster.nodes import fold
from fortress.cluster.publisher import POLL_S, Publisher
from fortress.cluster.trust import serve_one
from fortress.config import Config, ConfigError, load
from fortress.signals import stop_event
from fortress.state.db import connect
from fortress.state.secretbox import for_config

log = logging.getLogger("fortress.cluster")
ERRORS = (redis.RedisError, OSError)
LEASE_EVERY_S = 1.0
FOLD_EVERY_S = 1.0
ANSWER_EVERY_S = 0.02


async def run(cfg: Config, stop: asyncio.Event, claim_idle_s: float = CLAIM_IDLE_S) -> None:
    """Serve as the control node until `stop` is set."""
    url = cfg.cluster.redis_url
    client = async_client(url)
    reader = async_client(url, timeout_s=BLOCK_MS / 1000 + TIMEOUT_S)  # its reads block for BLOCK_MS
    db = await connect(cfg.database.path)
    sessions = await connect(cfg.database.path)  # trust sessions: the publisher reads only what committed
    lease = Lease(client, cfg.cluster.name)
    publisher = Publisher(db, cfg, client, for_config(cfg))
    consumer = UsageConsumer(reader, cfg.database.path, cfg.cluster.name, claim_idle_s)

    async def publish() -> None:
        if lease.held:
            await publisher.step()

    async def fold_beats() -> None:
        await fold(client, db)

    async def answer_wanted() -> None:  # nodes holding a refusal ask for the latest (Subscriber.latest)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(SNAPSHOT_WANTED)
            while not stop.is_set():
                if await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0) is None:
                    continue
                while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.0) is not None:
                    pass  # asks that came meanwhile are answered by the same publication
                if lease.held:
                    await publisher.answer()
                await asyncio.sleep(ANSWER_EVERY_S)  # a flood of asks (bad keys) costs 50 notices/s at most
        finally:
            with contextlib.suppress(*ERRORS):
                await pubsub.aclose()

    async def trust_sessions() -> None:  # IP trust sessions asked for by nodes (fortress.cluster.trust)
        if not lease.held:
            await asyncio.sleep(LEASE_EVERY_S)
            return
        while not stop.is_set() and await serve_one(client, reader, sessions, publish, BLOCK_MS / 1000):
            pass

    with contextlib.suppress(*ERRORS):  # take the lease before the consumer first looks at it
        await lease.keep()
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(_every(LEASE_EVERY_S, lease.keep, "control lease", stop), name="lease"),
        loop.create_task(_every(POLL_S, publish, "snapshot publisher", stop), name="publish"),
        loop.create_task(_every(FOLD_EVERY_S, fold_beats, "node registry", stop), name="fold"),
        loop.create_task(_every(0.1, trust_sessions, "trust sessions", stop), name="trust"),
        loop.create_task(_every(0.5, answer_wanted, "snapshot requests", stop), name="wanted"),
    ]
    try:
        await consumer.run(stop, lease)
    finally:
        stop.set()
        await stop_tasks(tasks)
        await db.close()
        await sessions.close()
        await client.aclose()
        await reader.aclose()
        log.info(
            "control node stopped: %d publications, %d usage rows stored from %d batches (%d repeated, "
            "%d rejected, %d lost)",
            publisher.publications,
            consumer.rows,
            consumer.batches,
            consumer.duplicates,
            consumer.rejected,
            consumer.lost,
        )


async def _every(
    interval_s: float, step: Callable[[], Awaitable[object]], what: str, stop: asyncio.Event
) -> None:
    """step() every interval_s until `stop`; Redis errors are logged once per outage, others each time."""
    link = Reachability(what, log)
    while not stop.is_set():
        try:
            await step()
            link.ok()
        except ERRORS as exc:
            link.failed(exc)
        except Exception:  # a background failure must never stop the control node
            log.exception("%s failed", what)
        await asyncio.sleep(interval_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fortress.cluster.control", description="Fortress control node"
    )
    ap.add_argument("--config", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if not cfg.cluster.redis_url or cfg.cluster.role != "control":
        log.error('the control node process needs [cluster] redis_url and role = "control"')
        return 2

    async def serve() -> None:
        await run(cfg, stop_event())

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
