"""Building the proxy's Snapshot from config.toml plus the database.

The proxy polls read_config_version() (one indexed row) and calls load_snapshot() only when the
number changed.
"""

from __future__ import annotations

import logging
import os
import time

import aiosqlite

from fortress.config import Config
from fortress.state.secretbox import SecretBoxError, for_config
from fortress.state.snapshot import BackendRecord, KeyRecord, Policy, Rate, Snapshot

log = logging.getLogger("fortress.state")


async def read_config_version(db: aiosqlite.Connection) -> int:
    async with db.execute("SELECT value FROM meta WHERE key = 'config_version'") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def _rate(count: int | None, window_s: int | None) -> Rate | None:
    return (count, window_s) if count and window_s else None


def _globs(text: str) -> tuple[str, ...]:
    return tuple(g for g in text.split(",") if g)


def file_backends(cfg: Config) -> list[BackendRecord]:
    """Backends declared in config.toml; their credentials come from environment variables."""
    return [
        BackendRecord(
            name=b.name,
            url=b.url.rstrip("/"),
            type=b.type,
            weight=b.weight,
            models=b.models,
            credential=os.environ.get(b.credential_env, "") if b.credential_env else "",
            max_concurrent=b.max_concurrent,
            ca_bundle=b.ca_bundle,
            source="file",
            capabilities=b.capabilities,
        )
        for b in cfg.backends
    ]


async def load_snapshot(db: aiosqlite.Connection, cfg: Config) -> Snapshot:
    # The version is read first, so rows are never older than it: a write landing in between
    # bumps the version past this one and the next poll reloads. No transaction is held, so the
    # connection stays free for other tasks (the proxy's stats writes share it).
    version = await read_config_version(db)
    async with db.execute(
        "SELECT k.*, u.name AS user FROM api_keys k JOIN users u ON u.id = k.user_id"
    ) as cur:
        key_rows = await cur.fetchall()
    async with db.execute("SELECT * FROM backends WHERE enabled = 1 ORDER BY name") as cur:
        backend_rows = await cur.fetchall()
    async with db.execute("SELECT key, value FROM settings") as cur:
        settings = {r[0]: r[1] for r in await cur.fetchall()}
    async with db.execute(
        "SELECT ip, key_id, expires_at FROM ip_trust WHERE expires_at > ?", (time.time(),)
    ) as cur:
        trust = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}

    keys = {
        r["id"]: KeyRecord(
            id=r["id"],
            user=r["user"],
            secret_hash=r["secret_hash"],
            state=r["state"],
            scope=r["scope"],
            models=_globs(r["models"]),
            rate=_rate(r["rate_count"], r["rate_window_s"]),
            tokens=_rate(r["token_count"], r["token_window_s"]),
            max_concurrent=r["max_concurrent"],
            max_num_ctx=r["max_num_ctx"],
            max_num_predict=r["max_num_predict"],
            max_keep_alive_s=r["max_keep_alive_s"],
            expires_at=r["expires_at"],
            label=r["label"],
            auto_models=_globs(r["auto_models"]),
        )
        for r in key_rows
    }

    backends = file_backends(cfg)
    taken = {b.name for b in backends}
    box = for_config(cfg)
    for r in backend_rows:
        if r["name"] in taken:  # config.toml wins over a database row of the same name
            log.warning("backend %s is in both config.toml and the database; using config.toml", r["name"])
            continue
        credential = ""
        if r["credential_enc"] is not None:
            try:
                credential = box.decrypt(r["credential_enc"])
            except SecretBoxError as exc:
                log.error("backend %s: %s; forwarding without its credential", r["name"], exc)
        backends.append(
            BackendRecord(
                name=r["name"],
                url=r["url"],
                type=r["type"],
                weight=r["weight"],
                models=_globs(r["models"]),
                credential=credential,
                max_concurrent=r["max_concurrent"],
                ca_bundle=r["ca_bundle"],
                source="db",
            )
        )

    return Snapshot(
        version=version, keys=keys, backends=tuple(backends), policy=Policy.build(cfg, settings), trust=trust
    )
