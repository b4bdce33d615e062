"""Reducing py-spy's collapsed stacks to per-function shares."""

import asyncio
import json

import pytest

import fortress
from bench.nginx import SHOW
from bench.profile import RUNS, bytecodes, frame_name, inproc, shares

RAW = """process 7:"fortress";<module> (f/main.py:3);run (f/server.py:10);on_body (f/protocol.py:88) 6
<module> (f/main.py:3);run (f/server.py:11);on_body (f/protocol.py:90) 2
<module> (f/main.py:3);run (f/server.py:12) 2
"""


def test_frames_aggregate_per_function_not_per_line() -> None:
    assert frame_name("on_body (fortress/proxy/protocol.py:88)") == "on_body (fortress/proxy/protocol.py)"


def test_self_and_inclusive_shares() -> None:
    own, inclusive, total = shares(RAW)
    assert total == 10
    assert own["on_body (f/protocol.py)"] == 8
    assert own["run (f/server.py)"] == 2
    assert inclusive["run (f/server.py)"] == 10
    assert inclusive["<module> (f/main.py)"] == 10


def test_inproc_driver_serves_w1_through_the_real_request_path() -> None:
    """The in-process figure is only worth something if the request really went through: a 200 with the
    upstream's body, Fortress's own header, and one pooled connection reused for every request."""
    figures, first = asyncio.run(inproc(200))
    head, _, body = first.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nX-Request-ID: " in head
    assert json.loads(body) == SHOW
    assert len(figures) == RUNS and all(f > 0 for f in figures)


@pytest.mark.skipif(fortress.MODE.startswith("compiled"), reason="counts the sources: the pure-Python pass")
def test_bytecode_count_names_the_request_path_and_is_exact() -> None:
    """Counted twice, the same path gives the same count per request (what makes it worth printing on a
    noisy machine), and the count lands on the proxy's own functions, not on the driver's loop."""
    counts, first = asyncio.run(bytecodes(300))
    again, _ = asyncio.run(bytecodes(300))
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert sum(counts.values()) == sum(again.values()) > 300 * 1000
    names = "\n".join(counts)
    assert "on_header (fortress/proxy/protocol.py:" in names
    assert "data_received (fortress/proxy/upstream.py:" in names
    assert "run (bench/profile.py:" not in names


def test_bytecode_count_with_metrics_counts_the_recorder_too() -> None:
    """--metrics drives the path as Fortress runs by default (counting on): the recorder's per-request call
    shows in the count, and only then."""
    off, _ = asyncio.run(bytecodes(200))
    on, first = asyncio.run(bytecodes(200, metrics=True))
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    recorder = "request (fortress/metrics/recorder.py:"
    assert any(name.startswith(recorder) for name in on)
    assert not any(name.startswith(recorder) for name in off)
    assert sum(on.values()) > sum(off.values())
