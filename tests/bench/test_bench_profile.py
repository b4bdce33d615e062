"""Reducing py-spy's collapsed stacks to per-function shares."""

from bench.profile import frame_name, shares

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
