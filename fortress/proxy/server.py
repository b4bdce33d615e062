"""The proxy process: listeners, workers, configuration reload, usage and stats writers, graceful drain.

`serve(cfg)` runs one worker in this process, or forks `workers` processes that each bind the port
with SO_REUSEPORT. Only the background tasks here touch SQLite; the hot path reads the snapshot.
The reload path is described in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING

import uvloop

import fortress
from fortress import logs
from fortress.addr import parse_listen
from fortress.config import Config
from fortress.metrics.recorder import Recorder
from fortress.metrics.table import MetricsTable
from fortress.pipeline.limits import Limiter, open_limiter
from fortress.proxy.freshness import Freshness
from fortress.proxy.protocol import ClientProtocol
from fortress.proxy.tls import LiveTls
from fortress.proxy.usage_pipe import UsagePipe
from fortress.proxy.worker import SWEEP_INTERVAL_S, Worker
from fortress.signals import stop_event
from fortress.state.db import connect
from fortress.state.load import load_snapshot, read_config_version
from fortress.state.repo import get_settings
from fortress.state.trust import TrustTable
from fortress.state.usage import write_proxy_stats

if TYPE_CHECKING:
    from fortress.cluster.node import Member, Shared

log = logging.getLogger("fortress.proxy")
RELOAD_INTERVAL_S = 0.25
RECHECK_FLOOR_S = 0.05  # on-demand checks (a key not in the snapshot) start at least this far apart
STATS_INTERVAL_S = 1.0
# How long a closing TLS connection waits for the client's close_notify (asyncio's default is 30 s).
# HTTP frames its own messages, so the wait protects nothing; idle HTTPS clients that never answer it
# held every graceful stop for the whole drain deadline and kept counting against per-IP caps.
TLS_SHUTDOWN_TIMEOUT_S = 3.0
RESTART_PAUSE_S = 1.0  # a worker that dies sooner than this after its start is replaced after this pause


async def _every(interval: float, step, name: str) -> None:  # type: ignore[no-untyped-def]
    while True:
        await asyncio.sleep(interval)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a background failure must never stop the proxy
            log.warning("%s failed: %s", name, exc)


async def run_worker(cfg: Config, shm_path: str = "", ready: str = "", metrics_path: str = "") -> None:
    loop = asyncio.get_running_loop()
    stop = stop_event()  # first: a SIGTERM during start-up drains and logs like any other
    limiter: Limiter = open_limiter(cfg.cluster.redis_url, shm_path)
    member: Member | None = None  # a cluster node: no database; snapshot, usage, figures through Redis
    cluster: Shared | None = None
    if cfg.cluster.redis_url:  # redis-py is an optional dependency: imported only when configured
        from fortress.cluster.node import Member, Shared

        member = Member(cfg, limiter) if cfg.cluster.role == "node" else None
        cluster = member or Shared(cfg, limiter)
    if member is None:
        db = await connect(cfg.database.path)  # reads: the snapshot (never waits behind a blocked write)
        writes = await connect(cfg.database.path)  # the stats row and IP trust sessions
        version = await read_config_version(db)
        snapshot = await load_snapshot(db, cfg)
        settings = await get_settings(db)
        usage = UsagePipe(cfg.database.path, cfg.logging)
    else:
        snapshot = await member.join()
        settings = {}  # TLS from this node's own config.toml: the control's settings name its files
        usage = UsagePipe(cfg.database.path, cfg.logging, writer=member.usage_writer)
    await usage.start()
    worker = Worker(cfg, snapshot, loop, usage, limiter)
    worker.cluster = cluster
    if member is not None:
        member.follow(worker)
        worker.outbox.first = usage.hand_over  # each turn's rows to the producer before its client bytes
    recorder = None
    if metrics_path:
        table = MetricsTable(metrics_path)  # one per process: closing any copy drops its locks (table.py)
        recorder = Recorder(table, table.claim())
        worker.count_with(recorder)
    worker.start_polling()
    await worker.poller.ready(cfg.routing.connect_timeout_s)
    host, port = parse_listen(cfg.proxy.listen)
    tls = LiveTls.start(cfg, settings)
    server = await loop.create_server(
        lambda: ClientProtocol(worker),
        host,
        port,
        ssl=tls.context if tls else None,
        ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_S if tls else None,
        reuse_port=cfg.proxy.workers > 1,
        backlog=4096,
    )
    name = f"{socket.gethostname()}:{os.getpid()}"

    async def reload() -> None:
        nonlocal version
        if member is not None:
            await member.check()  # the published snapshot, taken by the member's subscriber
        elif (current := await read_config_version(db)) != version:
            worker.swap(await load_snapshot(db, cfg))
            worker.poller.sync()  # new or changed backends are polled at once; a new key costs no probe
            version = current
            if tls:
                tls.select(cfg, await get_settings(db))
        if tls:  # a new certificate applies to the next handshakes (fortress/proxy/tls.py)
            tls.refresh()

    async def sweep() -> None:
        worker.sweep()

    async def publish() -> None:
        worker.publish_metrics()

    async def stats() -> None:
        detail = {
            "backends": worker.router.export(),
            "capabilities": worker.router.capabilities.export(worker.router.inventory),
            "keys": worker.key_windows(),
            "pool": repr(worker.pool),
            "usage": usage.counters(),
            "tls": tls.fingerprint if tls else "",
        }
        if member is not None:
            await member.beat(detail)
            return
        await write_proxy_stats(
            writes,
            name,
            worker.in_flight(),
            worker.requests,
            worker.errors,
            len(worker.connections),
            cluster.stats_detail(worker, detail) if cluster else json.dumps(detail),
        )

    on_demand = member.check_now if member else None  # a node asks the control node first
    worker.fresh = Freshness(reload, RELOAD_INTERVAL_S, RECHECK_FLOOR_S, on_demand=on_demand)
    worker.trust_store = member.trust if member else TrustTable(writes)
    tasks = [
        loop.create_task(worker.fresh.run()),
        loop.create_task(_every(SWEEP_INTERVAL_S, sweep, "timeout sweep")),
        loop.create_task(_every(STATS_INTERVAL_S, stats, "stats write")),
    ]
    if recorder is not None:
        worker.publish_metrics()
        tasks.append(loop.create_task(_every(STATS_INTERVAL_S, publish, "metrics publish")))
    scheme = "https" if tls else "http"
    sockname = server.sockets[0].getsockname()
    log.info(
        "proxy worker %d listening on %s://%s:%d (request path: %s)",
        os.getpid(),
        scheme,
        sockname[0],
        sockname[1],
        fortress.MODE,
    )
    if ready:
        with open(ready, "w") as fh:
            fh.write(str(sockname[1]))
    # What start-up made (modules, configuration, the first snapshot: ~10^5 objects) lives as long as
    # the worker: out of the collector's generations, a full collection no longer walks it all again
    # (the in-process W1 driver: GC 3.0% -> 1.8% of its time).
    gc.freeze()
    await stop.wait()
    log.info("proxy worker %d draining", os.getpid())
    server.close()
    await worker.drain(cfg.proxy.drain_timeout_s)
    await worker.poller.aclose()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    await usage.close()
    if recorder is not None:
        recorder.close()
        recorder.table.close()  # the slot is folded into the retired totals by the next claim
    if member is not None:
        await member.aclose()
    else:
        await db.close()
        await writes.close()
    log.info("proxy worker %d stopped (%d usage events handed to the writer)", os.getpid(), usage.sent)


def _shm_path(cfg: Config) -> str:
    """Workers share one counter table so limits stay exact across processes (with Redis: while down)."""
    if cfg.proxy.workers == 1:
        return ""
    from fortress.pipeline.shm import SharedLimiter

    path = str(cfg.data_dir / "limits.shm")
    SharedLimiter.create(path)
    return path


def _metrics_path(cfg: Config) -> str:
    """A fresh metrics table before any worker starts (a restart begins at zero, as any exporter does)."""
    if not cfg.metrics.enabled:
        return ""
    path = str(cfg.data_dir / "metrics.shm")
    MetricsTable.create(path, cfg.proxy.workers)
    return path


def serve(cfg: Config, ready: str = "") -> int:
    """Run the proxy until SIGTERM/SIGINT; returns the exit code.

    With `workers > 1` this process only supervises: a worker that dies (a crash, the OOM killer) is
    replaced at once, or after RESTART_PAUSE_S when it died young, so a worker that cannot start does
    not spin; the others keep serving the port meanwhile (SO_REUSEPORT)."""
    logs.configure(cfg.logging)
    shm_path = _shm_path(cfg)
    metrics_path = _metrics_path(cfg)
    if cfg.proxy.workers == 1:
        uvloop.run(run_worker(cfg, shm_path, ready, metrics_path))
        return 0

    def spawn() -> int:
        pid = os.fork()
        if pid == 0:  # child: its own loop, same port through SO_REUSEPORT
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the supervisor's handlers are not its own
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                uvloop.run(run_worker(cfg, shm_path, ready, metrics_path))
            except Exception:
                log.exception("worker failed")
                code = 1
            os._exit(code)
        return pid

    born = {spawn(): time.monotonic() for _ in range(cfg.proxy.workers)}  # pid -> when it started
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(born):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while born:
        pid, status = os.wait()
        started = born.pop(pid, None)
        if started is None:
            continue
        exit_code = os.waitstatus_to_exitcode(status)
        if stopping:
            code = code or exit_code
            continue
        how = f"was killed by signal {-exit_code}" if exit_code < 0 else f"exited with code {exit_code}"
        log.error("proxy worker %d %s; starting another", pid, how)
        if time.monotonic() - started < RESTART_PAUSE_S:
            time.sleep(RESTART_PAUSE_S)
        if not stopping:
            born[spawn()] = time.monotonic()
    return code
