"""Where the admin keeps the certificate it applies, and how it tells the running proxy.

An uploaded pair is written next to the database (<data dir>/tls, the key 0600) under names unique to
its content, each file atomically, so a proxy reloading at any moment reads a whole pair. Applying a
pair is one settings row (fortress/proxy/tls.py SETTING): its write bumps config_version, and every
proxy worker loads the pair into its live SSL context within a second.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import aiosqlite

from fortress.config import Config
from fortress.home import tls_dir
from fortress.proxy.tls import SETTING, TlsFiles, setting_value
from fortress.state.db import transaction
from fortress.state.repo import audit

KEEP_UPLOADS = 3  # older uploaded pairs are deleted (the newest few stay, to go back by path)


def store_upload(config: Config, cert_pem: bytes, key_pem: bytes) -> TlsFiles:
    """Write an uploaded, already validated pair under <data dir>/tls; returns its paths."""
    folder = tls_dir(config)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tag = hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest()[:12]
    files = TlsFiles(str(folder / f"uploaded-{tag}-cert.pem"), str(folder / f"uploaded-{tag}-key.pem"))
    _write_atomically(Path(files.cert), cert_pem, 0o644)
    _write_atomically(Path(files.key), key_pem, 0o600)
    _prune(folder)
    return files


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _prune(folder: Path) -> None:
    """Delete all but the KEEP_UPLOADS newest uploaded pairs."""
    certs = sorted(folder.glob("uploaded-*-cert.pem"), key=lambda p: p.stat().st_mtime, reverse=True)
    for cert in certs[KEEP_UPLOADS:]:
        cert.unlink(missing_ok=True)
        cert.with_name(cert.name.replace("-cert.pem", "-key.pem")).unlink(missing_ok=True)


async def apply(db: aiosqlite.Connection, files: TlsFiles, *, actor: str, ip: str, detail: str) -> None:
    """Make `files` the pair in force for the proxy (and the admin, when it serves HTTPS)."""
    async with transaction(db):
        await db.execute(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (SETTING, setting_value(files), time.time()),
        )
        await audit(db, actor, "tls.set", files.cert, detail, ip=ip)


async def clear(db: aiosqlite.Connection, *, actor: str, ip: str) -> bool:
    """Go back to config.toml's tls_cert/tls_key; False when no pair was set here."""
    async with transaction(db):
        cur = await db.execute("DELETE FROM settings WHERE key = ?", (SETTING,))
        if not cur.rowcount:
            return False
        await audit(db, actor, "tls.reset", "config.toml", ip=ip)
    return True
