"""The files a Fortress installation keeps besides config.toml, and which processes have its database open.

`python -m fortress.home [--config PATH]` prints the state files that exist, one per line, for
./reset.sh; `--in-use` prints the processes using the database instead (nothing when stopped),
`--database` the database's path (the container entrypoint's first-start test).
Standard library only, so it still runs once .venv is gone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fortress.config import Config, ConfigError, load


def tls_dir(cfg: Config) -> Path:
    """Where certificates uploaded in the admin (and `fortress cert`'s default pair) are kept."""
    return cfg.data_dir / "tls"


def database_files(cfg: Config) -> list[Path]:
    db = Path(cfg.database.path)
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def state_files(cfg: Config) -> list[Path]:
    """The database with its WAL, the secrets (credential key, session secret), the limiter's and the
    metrics' shared tables and the certificates uploaded in the admin. Not config.toml, not your own
    certificates."""
    from admin.secret import secret_path
    from fortress.state.secretbox import key_file_for

    return [
        *database_files(cfg),
        key_file_for(cfg),
        secret_path(cfg),
        cfg.data_dir / "limits.shm",
        cfg.data_dir / "metrics.shm",
        *sorted(tls_dir(cfg).glob("uploaded-*.pem")),
    ]


def in_use(cfg: Config) -> list[tuple[int, str]]:
    """(pid, command line) of every other process with the database or its WAL open (Linux /proc).

    Where /proc is missing this finds nothing; restore also takes an exclusive lock before writing.
    """
    wanted = {str(p.resolve()) for p in database_files(cfg)}
    found: list[tuple[int, str]] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) in wanted for fd in (entry / "fd").iterdir()):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry.name), cmd.strip()))
        except OSError:  # gone, or not ours to look at
            continue
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fortress.home", description=__doc__)
    parser.add_argument("--config", default=None, metavar="PATH")
    parser.add_argument("--in-use", action="store_true", help="list the processes using the database")
    parser.add_argument("--database", action="store_true", help="print the database path")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"fortress: {exc}\n")
        return 1
    if args.database:
        print(cfg.database.path)
        return 0
    if args.in_use:
        for pid, cmd in in_use(cfg):
            print(f"{pid} {cmd}")
        return 0
    for path in state_files(cfg):
        if path.exists():
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
