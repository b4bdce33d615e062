"""Certificates in the admin (pure): check a PEM pair (parse, key matches cert, expiry) and say what the
running proxy does with the pair in force."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    not_after: datetime
    names: tuple[str, ...]
    serial: str  # hex
    fingerprint: str  # SHA-256 of the DER, hex: what fortress/proxy/tls.py reports for the served pair

    def days_left(self, now: datetime | None = None) -> int:
        return (self.not_after - (now or datetime.now(UTC))).days


def check_pair(cert_pem: bytes, key_pem: bytes) -> CertInfo:
    """Validate a certificate/key pair; ValueError with a one-line reason when unusable."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ValueError("the certificate is not a valid PEM X.509 certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ValueError("the private key is not a valid unencrypted PEM key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        raise ValueError("the private key does not match the certificate")
    info = CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        names=_names(cert),
        serial=f"{cert.serial_number:x}",
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )
    if info.days_left() < 0:
        raise ValueError(f"the certificate expired on {info.not_after:%Y-%m-%d}")
    return info


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    )


RESTART = "restart Fortress (fortress run, or systemctl restart fortress)"


def proxy_note(wanted: str | None, served: Sequence[str]) -> tuple[str, bool]:
    """(what the running proxy does with the pair in force, settled?) for the settings page.

    `wanted` is the in-force pair's fingerprint (None: no pair, plain HTTP); `served` holds each
    reporting proxy worker's fingerprint, "" for a worker listening in plain HTTP. Not settled means
    the proxy should catch up within a second or two, so the page asks again.
    """
    if not served:
        return "The proxy is not running; it uses this setting when it starts.", True
    if wanted is None:
        if any(served):
            return (
                f"HTTPS is off in the settings, but the running proxy listens with TLS: it keeps serving its "
                f"current certificate until you {RESTART}; after that it speaks plain HTTP.",
                True,
            )
        return "The proxy listens in plain HTTP.", True
    if not all(served):
        return (
            f"The running proxy listens in plain HTTP: turning HTTPS on needs a restart. "
            f"{RESTART[0].upper()}{RESTART[1:]} and it serves this certificate.",
            True,
        )
    if all(fp == wanted for fp in served):
        return "The running proxy serves this certificate to new connections; no restart needed.", True
    return (
        "The running proxy has not loaded this certificate yet: it should within a second or two; "
        "if this stays, the proxy's log says why.",
        False,
    )
