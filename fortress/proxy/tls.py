"""The listener's TLS certificate: which files are in force, and reloading them into the live SSL context.

The admin can choose a certificate at run time: the settings row SETTING (`{"cert": path, "key":
path}`) wins over `[proxy] tls_cert`/`tls_key`. Loading a pair into the SSLContext a listener already
uses changes what the next handshakes present, while connections already open keep theirs, so a new
certificate needs no restart. Whether a listener speaks TLS at all is decided when it starts.

The files are checked cheaply (stat) on every reload tick, so a certificate renewed in place
(certbot) is picked up too; a pair is read once, tried on a scratch context, and only a pair that
loads there goes into the live one (a half-loaded context would fail every handshake).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fortress.config import Config

log = logging.getLogger("fortress.tls")
SETTING = "tls.files"
_FIRST_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str


def effective_files(cfg: Config, settings: Mapping[str, str]) -> TlsFiles | None:
    """The pair in force: the admin's setting, else config.toml's, else None (plain HTTP)."""
    raw = settings.get(SETTING)
    if raw:
        try:
            value = json.loads(raw)
            return TlsFiles(str(value["cert"]), str(value["key"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring the malformed %s setting", SETTING)
    if cfg.proxy.tls_cert:
        return TlsFiles(cfg.proxy.tls_cert, cfg.proxy.tls_key)
    return None


def setting_value(files: TlsFiles) -> str:
    return json.dumps({"cert": files.cert, "key": files.key})


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context (TLS 1.2 and up, HTTP/1.1 by ALPN) holding `files`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(files.cert, files.key)
    return context


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the first (leaf) certificate's DER, as clients and `openssl x509 -fingerprint` show it."""
    m = _FIRST_CERT.search(cert_pem)
    if m is None:
        raise ValueError("no PEM certificate found")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group().decode("ascii"))).hexdigest()


def _stat(files: TlsFiles) -> tuple[object, ...]:
    """What changes when either file is replaced or rewritten; None parts for missing files."""
    out: list[object] = [files]
    for path in (files.cert, files.key):
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class LiveTls:
    """One listener's SSL context and the pair loaded into it."""

    def __init__(self, files: TlsFiles) -> None:
        cert_pem, key_pem = Path(files.cert).read_bytes(), Path(files.key).read_bytes()
        self.context = server_context(files)
        self.files = self.wanted = files
        self.fingerprint = fingerprint(cert_pem)
        self._digest = _digest(cert_pem, key_pem)
        self._seen = _stat(files)

    @classmethod
    def start(cls, cfg: Config, settings: Mapping[str, str]) -> LiveTls | None:
        files = effective_files(cfg, settings)
        return cls(files) if files else None

    def select(self, cfg: Config, settings: Mapping[str, str]) -> None:
        """Take the pair now in force; None (HTTPS turned off) keeps the current one until restart."""
        self.wanted = effective_files(cfg, settings) or self.files

    def refresh(self) -> bool:
        """Load the wanted pair if it or its files changed since last looked at; True when reloaded.

        A pair that does not load is logged once (until its files change again); the old one stays.
        """
        stamp = _stat(self.wanted)
        if stamp == self._seen:
            return False
        self._seen = stamp
        files = self.wanted
        try:
            cert_pem, key_pem = Path(files.cert).read_bytes(), Path(files.key).read_bytes()
            digest = _digest(cert_pem, key_pem)
            if digest == self._digest:  # touched or renamed, same pair
                self.files = files
                return False
            new = fingerprint(cert_pem)
            with _private_copy(cert_pem, key_pem) as copy:
                server_context(copy)  # rehearsal: raises on a bad or mismatched pair
                self.context.load_cert_chain(copy.cert, copy.key)
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.warning("TLS certificate %s not loaded, keeping the current one: %s", files.cert, exc)
            return False
        self.files, self.fingerprint, self._digest = files, new, digest
        log.info("TLS certificate reloaded from %s (sha256 %s)", files.cert, new)
        return True


def _digest(cert_pem: bytes, key_pem: bytes) -> bytes:
    return hashlib.sha256(cert_pem + b"\0" + key_pem).digest()


@contextmanager
def _private_copy(cert_pem: bytes, key_pem: bytes) -> Iterator[TlsFiles]:
    """The pair in an owner-only temporary directory, so both loads see exactly the bytes read once."""
    with tempfile.TemporaryDirectory(prefix="fortress-tls-") as folder:
        copy = TlsFiles(os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem"))
        Path(copy.cert).write_bytes(cert_pem)
        Path(copy.key).write_bytes(key_pem)
        yield copy
