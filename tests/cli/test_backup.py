"""Issue 15.5: `fortress backup` copies the live database under load; `fortress restore` puts it back.

Real processes: the simulator, `fortress serve`, clients sending requests, the `fortress` command.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.admin.conftest import start_admin
from tests.conftest import Fortress, Sim, make_fortress, stop

MODEL = "qwen2.5:0.5b"


def home_in(path: Path, sim: Sim | None) -> Fortress:
    path.mkdir()
    return make_fortress(path, [("local", sim.url)] if sim else [])


def rows(db: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db)) as conn:  # closed: restore refuses open databases
        return conn.execute(sql).fetchall()


def usage(db: Path) -> dict[int, tuple]:
    return {r[0]: r for r in rows(db, "SELECT * FROM usage")}


def key_ids(db: Path) -> set[str]:
    return {r[0] for r in rows(db, "SELECT id FROM api_keys")}


class Load:
    """Clients sending generate requests through the proxy until stopped."""

    def __init__(self, url: str, keys: list[str]) -> None:
        self.stopping = threading.Event()
        self.sent = 0
        self.threads = [threading.Thread(target=self._run, args=(url, key)) for key in keys]

    def _run(self, url: str, key: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            while not self.stopping.is_set():
                r = c.post("/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False})
                assert r.status_code == 200, r.text
                self.sent += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join()


def wait_for_rows(db: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while rows(db, "SELECT count(*) FROM usage")[0][0] < n:
        assert time.monotonic() < deadline, f"fewer than {n} usage rows after {timeout} s"
        time.sleep(0.1)


def test_backup_under_load_and_restore_bring_back_every_key_and_usage_row(tmp_path: Path, sim: Sim) -> None:
    f = home_in(tmp_path / "home", sim)
    f.cli("user", "add", "alice")
    f.cli("user", "add", "bob")
    keys = [f.cli("key", "create", "--user", u).stdout.split()[0] for u in ("alice", "alice", "bob")]
    f.serve()
    backup = tmp_path / "fortress-backup.db"
    try:
        with Load(f.url, keys) as load:
            wait_for_rows(f.db, 50)
            during = f.cli("key", "create", "--user", "bob", "--name", "made-under-load").stdout.split()[0]
            out = f.cli("backup", str(backup))  # while requests flow and the usage writer commits
            sent_at_backup = load.sent
            wait_for_rows(f.db, rows(f.db, "SELECT count(*) FROM usage")[0][0] + 30)  # more after it
            after = f.cli("key", "create", "--user", "bob", "--name", "made-after").stdout.split()[0]
        assert "backup written" in out.stdout and "keep a copy" in out.stderr
    finally:
        f.stop()  # drains: the usage writer commits what it holds
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert not Path(f"{backup}-wal").exists()  # one self-contained file

    final, saved = usage(f.db), usage(backup)
    assert 0 < len(saved) < len(final) and sent_at_backup > 0
    # the backup is the database as of one instant: every row up to its last one, each exactly as committed
    assert saved == {i: r for i, r in final.items() if i <= max(saved)}
    # and the hourly roll-up written in the same transactions agrees with it
    assert rows(backup, "SELECT sum(requests) FROM usage_hourly")[0][0] == len(saved)
    short = {k.split("_")[1] for k in (*keys, during)}
    assert short <= key_ids(backup) and after.split("_")[1] not in key_ids(backup)

    r = f.cli("restore", str(backup))
    assert "restored" in r.stdout and "kept as" in r.stdout
    assert usage(f.db) == saved and key_ids(f.db) == key_ids(backup)
    kept = next(f.db.parent.glob("fortress.db.before-restore-*"))
    assert usage(kept) == final and after.split("_")[1] in key_ids(kept)  # nothing lost by restoring

    f.serve()  # the restored database runs: keys from before the backup work, the later one does not
    try:
        for key, status in ((keys[0], 200), (during, 200), (after, 401)):
            got = httpx.get(f"{f.url}/api/tags", headers={"Authorization": f"Bearer {key}"}).status_code
            assert got == status, key
    finally:
        f.stop()


@pytest.fixture
def home(tmp_path: Path, sim: Sim) -> Fortress:
    f = home_in(tmp_path / "home", sim)
    f.cli("user", "add", "carol")
    return f


def test_restore_refuses_while_the_proxy_or_the_admin_runs(home: Fortress, tmp_path: Path) -> None:
    backup = tmp_path / "b.db"
    home.cli("backup", str(backup))
    home.cli("user", "add", "dave")
    home.serve()
    try:
        r = home.cli("restore", str(backup), check=False)
        assert r.returncode == 1 and r.stdout == ""
        assert (
            r.stderr.startswith("fortress: the database is in use by pid ")
            and "stop Fortress first" in r.stderr
        )
        assert "serve" in r.stderr
    finally:
        home.stop()
    admin = start_admin(home)
    try:
        r = home.cli("restore", str(backup), check=False)
        assert r.returncode == 1 and "admin" in r.stderr and "stop Fortress first" in r.stderr
    finally:
        stop(admin.proc)
    assert "dave" in home.cli("user", "list").stdout  # nothing was replaced


def test_restore_checks_the_file_is_a_fortress_database(home: Fortress, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all\n" * 100)
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE things (x)")
    newer = tmp_path / "newer.db"
    home.cli("backup", str(newer))
    with contextlib.closing(sqlite3.connect(newer)) as conn, conn:
        conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    cases = {
        text: "is not a Fortress database",
        other: "is not a Fortress database (no admins, api_keys",
        newer: "has schema version 999",
        tmp_path / "missing.db": "no backup file at",
    }
    for path, reason in cases.items():
        r = home.cli("restore", str(path), check=False)
        assert r.returncode == 1 and reason in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1  # one line, no traceback
    assert "carol" in home.cli("user", "list").stdout
    assert not list(home.db.parent.glob("*.before-restore-*"))


def test_backup_refusals(home: Fortress, tmp_path: Path) -> None:
    target = tmp_path / "b.db"
    home.cli("backup", str(target))
    r = home.cli("backup", str(target), check=False)
    assert r.returncode == 1 and "already exists (use --force" in r.stderr
    home.cli("backup", str(target), "--force")
    r = home.cli("backup", str(home.db), "--force", check=False)
    assert r.returncode == 1 and "cannot be the database itself" in r.stderr
    r = home.cli("backup", str(tmp_path / "no" / "such" / "dir.db"), check=False)
    assert r.returncode == 1 and "no directory" in r.stderr
    empty = home_in(tmp_path / "other", None)
    empty.db.unlink()
    r = empty.cli("backup", str(tmp_path / "x.db"), check=False)
    assert r.returncode == 1 and "no database at" in r.stderr


def test_restore_onto_a_fresh_install(home: Fortress, tmp_path: Path) -> None:
    backup = tmp_path / "b.db"
    home.cli("backup", str(backup))
    fresh = home_in(tmp_path / "fresh", None)
    for p in fresh.db.parent.glob("fortress.db*"):
        p.unlink()
    r = fresh.cli("restore", str(backup))
    assert "kept as" not in r.stdout  # there was nothing to keep
    assert "carol" in fresh.cli("user", "list").stdout
    assert stat.S_IMODE(os.stat(fresh.db).st_mode) == 0o600
    assert rows(fresh.db, "PRAGMA journal_mode")[0][0] == "wal"
