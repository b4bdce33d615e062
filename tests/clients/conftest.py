"""Fixtures for issue 11 (every client gets in): a gateway with every key source and IP trust on, over
its own simulator (bodies journaled, so a test can assert what reached the backend)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Fortress, Sim, make_fortress, start_sim

ALL_SOURCES = """
[security]
key_in_query = true
key_in_body = true
ip_trust_ttl_s = 600
auth_fail_limit = 5
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[Sim]:
    s = start_sim("--journal-bodies", name="clients")
    yield s
    s.stop()


@contextmanager
def serving(home: Path, backends: list[tuple[str, str]], extra: str = "") -> Iterator[Fortress]:
    """A configured Fortress home with its proxy running, stopped on the way out."""
    f = make_fortress(home, backends, extra)
    f.serve()
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, backend: Sim) -> Iterator[Fortress]:
    with serving(tmp_path_factory.mktemp("clients"), [("local", backend.url)], ALL_SOURCES) as f:
        yield f


def with_user(f: Fortress, user: str) -> None:
    if user not in f.cli("user", "list").stdout.split():
        f.cli("user", "add", user)


def new_key(f: Fortress, user: str = "alice", *flags: str) -> str:
    """A key straight from `fortress key create`, used at once (no waiting: issue 11.1)."""
    with_user(f, user)
    return f.cli("key", "create", "--user", user, *flags).stdout.splitlines()[0].strip()
