"""The session secret: read from a 0600 file next to the database, created once, never regenerated.

A secret drawn at every start would log everyone out on restart and differ between processes.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fortress.config import Config


def secret_path(cfg: Config) -> Path:
    return Path(cfg.admin.session_secret_file or cfg.data_dir / "admin-session.secret")


def load_or_create(path: Path) -> bytes:
    """32 secret bytes from `path`, creating the file (mode 0600, exclusive) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race; read its secret
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    text = path.read_text().strip()
    if len(text) != 64:
        raise ValueError(f"{path}: expected 64 hex characters")
    return bytes.fromhex(text)
