"""Circuit breaker: the transition table driven directly with a fake clock; what counts as a failure."""

from __future__ import annotations

import pytest

from fortress.routing.health import TRANSITIONS, Breaker, BreakerError, Event, State, answered

from .helpers import FakeClock


def make(threshold: int = 3, cool_down_s: float = 10.0) -> tuple[Breaker, FakeClock]:
    clock = FakeClock()
    return Breaker(threshold=threshold, cool_down_s=cool_down_s, clock=clock), clock


def test_opens_after_consecutive_failures_only() -> None:
    b, _ = make(threshold=3)
    b.record(False)
    b.record(False)
    b.record(True)  # resets the run
    b.record(False)
    b.record(False)
    assert b.state is State.CLOSED
    b.record(False, "connect refused")
    assert b.state is State.OPEN
    assert not b.available()
    assert b.export()["last_error"] == "connect refused"


def test_cool_down_then_one_probe_then_closed() -> None:
    b, clock = make(threshold=1, cool_down_s=10)
    b.record(False)
    clock.now += 9.9
    assert not b.available()
    clock.now += 0.2
    assert b.available()
    assert b.state is State.HALF_OPEN
    b.begin()
    assert not b.available()  # one probe at a time
    b.record(True)
    assert b.state is State.CLOSED
    assert b.available()


def test_failed_probe_reopens_for_a_full_cool_down() -> None:
    b, clock = make(threshold=1, cool_down_s=5)
    b.record(False)
    clock.now += 5
    assert b.available()
    b.begin()
    b.record(False)
    assert b.state is State.OPEN
    clock.now += 4
    assert not b.available()
    clock.now += 1
    assert b.available()


def test_late_answers_while_open_change_nothing() -> None:
    b, _ = make(threshold=1)
    b.record(False)
    b.record(True)
    assert b.state is State.OPEN


def test_illegal_events_raise() -> None:
    b, _ = make()
    with pytest.raises(BreakerError):
        b._apply(Event.COOL_DOWN)  # closed breakers do not cool down
    assert Event.TRIP not in TRANSITIONS[State.HALF_OPEN]


def test_export_is_plain_data() -> None:
    b, clock = make(threshold=1)
    clock.now += 2
    b.record(False, "timeout")
    clock.now += 3
    assert b.export() == {
        "state": "open",
        "probe_ok": True,
        "consecutive_failures": 1,
        "since_s": 3.0,
        "last_error": "timeout",
    }


def test_only_server_failures_count() -> None:
    assert answered(200, [b""]) and answered(404, [b'{"error":"model not found"}']) and answered(400, [])
    assert answered(500, [b'{"error":"model requires more system memory (64 GiB) than is available"}'])
    assert answered(500, [b'{"error":{"message":"boom","type":"api_error"}}'])  # OpenAI's shape
    assert answered(500, [b'{"err', b'or":"split across reads"}'])
    for status in (502, 503, 504):
        assert not answered(status, [b'{"error":"overloaded"}'])
    assert not answered(500, [])  # no body: a crash, not an answer
    assert not answered(500, [b"<html>Internal Server Error</html>"])
    assert not answered(500, [b'{"error":"cut'])
    assert not answered(500, [b'["error"]'])


def test_a_health_check_is_kept_and_counted() -> None:
    b, clock = make(threshold=2, cool_down_s=5)
    b.checked(False, "connection refused")
    assert not b.probe_ok and b.failures == 1 and b.state is State.CLOSED
    b.checked(False, "connection refused")
    assert b.state is State.OPEN
    b.checked(True)  # passing while cooling down: open still, but known to be up
    assert b.probe_ok and b.state is State.OPEN
    clock.now += 5
    b.checked(True)  # cooled down: half-open, and the check is its probe
    assert b.state is State.CLOSED
