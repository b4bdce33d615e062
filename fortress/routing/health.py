"""A circuit breaker per backend, written as a transition table with an injected clock.

CLOSED: traffic flows; `threshold` consecutive failures trip it OPEN. OPEN: no traffic until the
cool-down has passed, then HALF_OPEN. HALF_OPEN: one probe at a time (a request or the poller's
/api/version check); its success closes the breaker, its failure opens it again.

What counts (`answered`): only the backend failing as a server: connect errors, resets, timeouts,
malformed responses, streams it cut, and 502/503/504. Any other status with a well-formed JSON error
body (a 500 for a model too large for memory, every 4xx) is the request's own answer: it is relayed as
is and says the backend works, so one key's bad requests cannot take a backend away from everyone.

A breaker never shuts off a backend whose health check passes, when nothing else can serve: `probe_ok`
keeps the last active check's outcome, and the router (`choose.Router`) falls back to open breakers
whose check passed when no closed one is left. So a lone backend tripped by failures that are not its
health's fault (streams cut by clients' huge requests, say) keeps serving, while one that is really
down (its check fails too) is refused at once with 503. When a breaker opens, the router asks for an
immediate check (`Router.on_open`), so `probe_ok` is current within one check's timeout.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

SERVER_FAILURES = frozenset((502, 503, 504))


def answered(status: int, tail: Iterable[bytes]) -> bool:
    """Did the backend work (True), whatever it answered? `tail` is the end of the response body.

    Below 500: yes. 502/503/504: no. Another 5xx: yes when its body is a JSON object with an `error`
    (Ollama's and OpenAI's error shapes), no when it is empty, HTML or cut (a proxy or a crash).
    """
    if status < 500:
        return True
    if status in SERVER_FAILURES:
        return False
    try:
        body = json.loads(b"".join(tail))
    except ValueError:
        return False
    return isinstance(body, dict) and "error" in body


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Read on every request (Breaker.available, the router's choice): a global, where an Enum member read
# through its class costs several times as much on Python 3.11.
CLOSED = State.CLOSED


class Event(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    TRIP = "trip"  # the consecutive-failure threshold was reached
    COOL_DOWN = "cool_down"  # the open period is over


TRANSITIONS: dict[State, dict[Event, State]] = {
    State.CLOSED: {Event.SUCCESS: State.CLOSED, Event.FAILURE: State.CLOSED, Event.TRIP: State.OPEN},
    # late answers from requests sent before the trip change nothing while open
    State.OPEN: {Event.SUCCESS: State.OPEN, Event.FAILURE: State.OPEN, Event.COOL_DOWN: State.HALF_OPEN},
    State.HALF_OPEN: {Event.SUCCESS: State.CLOSED, Event.FAILURE: State.OPEN},
}


class BreakerError(RuntimeError):
    """An event that the current state does not accept (a bug in the caller)."""


class Breaker:
    """One backend's health. The hot path tests `state is CLOSED` and calls `available()` only when not."""

    __slots__ = (
        "changed_at",
        "clock",
        "cool_down_s",
        "failures",
        "last_error",
        "on_change",
        "probe_ok",
        "probing",
        "state",
        "threshold",
    )

    def __init__(
        self,
        *,
        threshold: int = 3,
        cool_down_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.threshold = max(1, threshold)
        self.cool_down_s = cool_down_s
        self.clock = clock
        self.state = State.CLOSED
        self.failures = 0  # consecutive
        self.probing = False  # a half-open probe is in flight
        self.probe_ok = True  # the last active health check passed (none yet: assume it would)
        self.changed_at = clock()
        self.last_error = ""
        self.on_change = on_change  # called after a transition or a new health-check outcome

    def _apply(self, event: Event) -> None:
        try:
            target = TRANSITIONS[self.state][event]
        except KeyError:
            raise BreakerError(f"{event.value} is not valid in state {self.state.value}") from None
        if target is not self.state:
            self.state = target
            self.changed_at = self.clock()
            self.probing = False
            if self.on_change is not None:
                self.on_change()

    def available(self) -> bool:
        """May a request go there now? Moves OPEN to HALF_OPEN once the cool-down has passed."""
        if self.state is CLOSED:
            return True
        if self.state is State.OPEN:
            if self.clock() - self.changed_at < self.cool_down_s:
                return False
            self._apply(Event.COOL_DOWN)
        return not self.probing

    def begin(self) -> None:
        """A request was sent; in HALF_OPEN it is the one probe, so others keep away."""
        if self.state is State.HALF_OPEN:
            self.probing = True

    def checked(self, ok: bool, error: str = "") -> None:
        """An active health check's outcome: kept in `probe_ok`, then counted like a request's."""
        if ok != self.probe_ok:
            self.probe_ok = ok
            if self.on_change is not None:
                self.on_change()
        self.available()  # lets a cooled-down breaker move to half-open first
        self.record(ok, error)

    def record(self, ok: bool, error: str = "") -> bool:
        """The outcome of a request or a health check; True when it opened the breaker."""
        if ok:
            self.failures = 0
            if self.state is not CLOSED:  # a success leaves a closed breaker as it is
                self._apply(Event.SUCCESS)
            return False
        was_open = self.state is State.OPEN
        self.failures += 1
        self.last_error = error
        self._apply(Event.FAILURE)
        if self.state is CLOSED and self.failures >= self.threshold:
            self._apply(Event.TRIP)
        return not was_open and self.state is State.OPEN

    def export(self) -> dict[str, Any]:
        """Plain data for the admin dashboard; ages rather than clock readings (clocks differ)."""
        return {
            "state": self.state.value,
            "probe_ok": self.probe_ok,
            "consecutive_failures": self.failures,
            "since_s": round(self.clock() - self.changed_at, 3),
            "last_error": self.last_error,
        }
