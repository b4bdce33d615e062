"""`fortress backup PATH` and `fortress restore PATH`: a consistent copy of the live database, and back.

backup copies with SQLite's online backup API in a single step, that is inside one read transaction:
in WAL mode this never blocks the proxy's or the admin's writes, and the copy is the database as of
one instant (every key and usage row committed before it, nothing after). The copy is checked,
switched to a self-contained single file (no -wal beside it) and renamed into place, mode 0600.

restore refuses while any process has the database open (proxy, admin, CLI): it looks in /proc and
then takes SQLite's exclusive lock, which it keeps while it writes. It checks first that the file is a
Fortress database of this version or older, keeps the current database beside it
(<db>.before-restore-<time>), writes the backup into the database through the same API, and migrates
an older one to the current schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fortress.config import Config
from fortress.home import in_use
from fortress.state import db as dbmod

REQUIRED_TABLES = frozenset({"meta", "users", "api_keys", "backends", "settings", "admins", "audit", "usage"})


class BackupError(Exception):
    """A refusal or failure to report in one line."""


@dataclass(frozen=True)
class Summary:
    path: Path
    schema_version: int
    users: int
    keys: int
    usage_rows: int
    size_bytes: int

    def line(self) -> str:
        return (
            f"{self.path}: schema version {self.schema_version}, {self.users} users, {self.keys} keys,"
            f" {self.usage_rows} usage rows, {self.size_bytes / 1e6:.1f} MB"
        )


@contextlib.contextmanager
def _open(path: Path, *, mode: str = "rwc") -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection; mode "ro" (read only), "rw" (never creates) or "rwc"."""
    uri = f"{path.resolve().as_uri()}?mode={mode}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5)
    try:
        yield conn
    finally:
        conn.close()


def describe(conn: sqlite3.Connection, path: Path) -> Summary:
    """Check that `conn` holds a sound Fortress database this version can use, and count what is in it."""
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = ", ".join(sorted(REQUIRED_TABLES - tables))
        if missing:
            raise BackupError(f"{path} is not a Fortress database (no {missing} table)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise BackupError(f"{path} is damaged (PRAGMA quick_check failed)")
        counts = [
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("users", "api_keys", "usage")
        ]
        pages, page_size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
    except sqlite3.DatabaseError as exc:  # not SQLite at all, or unreadable
        raise BackupError(f"{path} is not a Fortress database ({exc})") from None
    if not 1 <= version <= dbmod.latest_version():
        raise BackupError(
            f"{path} has schema version {version}; this Fortress knows 1 to {dbmod.latest_version()}"
            " (a backup from a newer Fortress needs that version to restore)"
        )
    return Summary(path, version, *counts, pages * page_size)


def backup(cfg: Config, dest: Path, *, force: bool = False) -> Summary:
    """Copy the live database to `dest`, consistently, while the proxy and admin keep running."""
    source = Path(cfg.database.path)
    if not source.exists():
        raise BackupError(f"no database at {source}: nothing to back up")
    if dest.exists() and not force:
        raise BackupError(f"{dest} already exists (use --force to replace it)")
    if dest.resolve() == source.resolve():
        raise BackupError("the backup cannot be the database itself")
    if not dest.parent.is_dir():
        raise BackupError(f"no directory {dest.parent}")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # keys' hashes and audit inside
    os.close(fd)
    try:
        with _open(source, mode="rw") as src, _open(tmp) as out:
            describe(src, source)
            src.backup(out)  # pages=-1: one step, one read transaction, one instant
            out.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
            summary = describe(out, dest)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return summary


def restore(cfg: Config, src_path: Path) -> tuple[Summary, Path | None]:
    """Replace the (stopped) database with the backup at `src_path`; returns it and where the old one went."""
    if not src_path.is_file():
        raise BackupError(f"no backup file at {src_path}")
    target = Path(cfg.database.path)
    _refuse_if_running(cfg)
    with _open(src_path, mode="ro") as src:
        summary = describe(src, src_path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(target, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        with _open(target) as live:
            live.execute("PRAGMA busy_timeout = 0")
            live.execute("PRAGMA locking_mode = EXCLUSIVE")  # held from the first write to the close
            try:
                live.execute("BEGIN EXCLUSIVE")
                live.execute("ROLLBACK")
            except sqlite3.OperationalError:
                raise BackupError(f"{target} is in use by another process: stop Fortress first") from None
            kept = _keep_current(live, target)
            src.backup(live)
            live.execute("PRAGMA journal_mode = WAL")
    asyncio.run(dbmod.migrate(target))  # a backup from an older Fortress gets the newer schema
    return summary, kept


def _refuse_if_running(cfg: Config) -> None:
    users = in_use(cfg)
    if users:
        who = "; ".join(f"pid {pid} ({cmd[:80]})" for pid, cmd in users)
        raise BackupError(f"the database is in use by {who}: stop Fortress first, restore needs it stopped")


def _keep_current(live: sqlite3.Connection, target: Path) -> Path | None:
    """Save the database about to be replaced next to it; None when it is empty (a fresh install)."""
    if not live.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        return None
    kept = target.with_name(f"{target.name}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}")
    fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    with _open(kept) as out:
        live.backup(out)
        out.execute("PRAGMA journal_mode = DELETE")
    return kept
