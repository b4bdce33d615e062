"""Check a PEM certificate and private key with cryptography: parse, key matches cert, expiry (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    not_after: datetime
    names: tuple[str, ...]

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
