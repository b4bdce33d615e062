"""Encryption of backend credentials at rest (Fernet), with the key kept outside the database.

A copied database file alone does not reveal backend credentials: the key sits in its own file
(default <database dir>/secrets.key, mode 0600), created on first use.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING

from fortress.config import Config

if TYPE_CHECKING:
    from cryptography.fernet import Fernet


class SecretBoxError(ValueError):
    """The key file is unreadable or does not match what was encrypted."""


class SecretBox:
    """Encrypts and decrypts short strings; reads (or creates) the key file on first use only."""

    def __init__(self, key_file: str | os.PathLike[str]) -> None:
        self.key_file = Path(key_file)
        self._fernet: Fernet | None = None

    def _load(self) -> Fernet:
        # cryptography is imported on first use: a proxy with no stored credential stays ~8 MiB smaller
        from cryptography.fernet import Fernet

        if self._fernet is None:
            if not self.key_file.exists():
                _create_key_file(self.key_file)
            try:
                self._fernet = Fernet(self.key_file.read_bytes().strip())
            except (OSError, ValueError) as exc:
                raise SecretBoxError(f"cannot use secrets key file {self.key_file}: {exc}") from None
        return self._fernet

    def encrypt(self, text: str) -> bytes:
        return self._load().encrypt(text.encode())

    def decrypt(self, token: bytes) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._load().decrypt(token).decode()
        except InvalidToken:
            raise SecretBoxError(f"a stored credential does not match {self.key_file}") from None


def _create_key_file(path: Path) -> None:
    """Write a fresh key atomically: the first process to link it wins, others read that one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, base64.urlsafe_b64encode(os.urandom(32)))  # a Fernet key
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def key_file_for(cfg: Config) -> Path:
    """security.secrets_key_file, or secrets.key next to the database."""
    if not cfg.security.secrets_key_file:
        return cfg.data_dir / "secrets.key"
    path = Path(cfg.security.secrets_key_file)
    if not path.is_absolute() and cfg.source:  # relative to the config file, like database.path
        path = Path(cfg.source).resolve().parent / path
    return path


def for_config(cfg: Config) -> SecretBox:
    return SecretBox(key_file_for(cfg))
