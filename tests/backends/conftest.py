"""Backends the way operators put them on a network: the simulator behind nginx with Basic auth and/or
HTTPS under a private CA (a CA certificate and a server certificate it signed, as a company PKI would)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.nginx import _COMMON, start_nginx
from bench.procs import Service
from tests.conftest import Sim, free_port, start_sim


def private_ca(directory: Path) -> tuple[Path, Path, Path]:
    """(CA bundle, server certificate for 127.0.0.1 signed by that CA, server key), as PEM files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fortress test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class Front:
    """nginx in front of a simulator: the URL to configure (scheme, optional user:pass) and its CA."""

    service: Service
    port: int
    scheme: str
    ca_bundle: str = ""
    userinfo: str = ""

    def url(self, path: str = "", userinfo: str | None = None) -> str:
        creds = self.userinfo if userinfo is None else userinfo
        return f"{self.scheme}://{creds + '@' if creds else ''}127.0.0.1:{self.port}{path}"


def start_front(prefix: Path, sim: Sim, *, tls: bool = False, basic: tuple[str, str] | None = None) -> Front:
    port = free_port()
    ca = ""
    listen = f"listen 127.0.0.1:{port}"
    tls_lines = ""
    if tls:
        ca_path, cert, key = private_ca(prefix)
        ca = str(ca_path)
        listen += " ssl"
        tls_lines = f"ssl_certificate {cert};\n        ssl_certificate_key {key};"
    auth_lines = ""
    userinfo = ""
    if basic is not None:
        (prefix / "htpasswd").write_text(f"{basic[0]}:{{PLAIN}}{basic[1]}\n")
        auth_lines = f'auth_basic "backend";\n            auth_basic_user_file {prefix}/htpasswd;'
        userinfo = f"{basic[0]}:{basic[1]}"
    body = f"""    server {{
        {listen};
        {tls_lines}
        location / {{
            {auth_lines}
            proxy_pass http://127.0.0.1:{sim.port};
            proxy_http_version 1.1;
            proxy_set_header Host 127.0.0.1:{sim.port};
            proxy_buffering off;
        }}
    }}"""
    service = start_nginx(
        "front", _COMMON.format(prefix=prefix / "front", nofile=256, body=body), port, None, prefix
    )
    return Front(service, port, "https" if tls else "http", ca, userinfo)


@pytest.fixture(scope="module")
def backend_sim() -> Iterator[Sim]:
    s = start_sim("--models", "llama3.2:latest", name="behind")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def basic_front(tmp_path_factory: pytest.TempPathFactory, backend_sim: Sim) -> Iterator[Front]:
    front = start_front(tmp_path_factory.mktemp("front"), backend_sim, basic=("fortress", "s3cret-pass"))
    yield front
    front.service.stop()


@pytest.fixture(scope="module")
def tls_front(tmp_path_factory: pytest.TempPathFactory, backend_sim: Sim) -> Iterator[Front]:
    front = start_front(tmp_path_factory.mktemp("front"), backend_sim, tls=True)
    yield front
    front.service.stop()
