"""The states of one exchange and the only transitions between them: a table, as h11's `_state.py`.

Pure: no I/O, no clock. The exchange (exchange.py) moves through it with `step()`, which raises on any
transition the table does not list, so a callback arriving in the wrong state is a loud bug instead of
a quiet double answer. docs/architecture.md draws the same table.

    CHOOSING   asking the router for a backend (also between retries)
    WAITING    every backend with the model is at its cap: parked in the fair queue
    CONNECTING taking a pooled connection or opening one (or the backend's kind answers itself)
    SENT       the request went upstream; no response byte has reached the client
    RELAYING   the response head went to the client; its body is flowing
    DONE       the response ended normally                       (final)
    CUT        the backend failed mid-response; the stream was ended with an error (final)
    FAILED     Fortress answered an error itself before any response byte (final)
    GONE       the client went away first                         (final)

Before a response byte reaches the client a failure may be retried (RETRY back to CHOOSING); after
it, the only ways out are DONE, CUT and GONE.
"""

from __future__ import annotations

from enum import IntEnum, auto


# IntEnum: its members hash as ints (in C), which keeps a transition's table lookup cheap.
class State(IntEnum):
    CHOOSING = auto()
    WAITING = auto()
    CONNECTING = auto()
    SENT = auto()
    RELAYING = auto()
    DONE = auto()
    CUT = auto()
    FAILED = auto()
    GONE = auto()


class Event(IntEnum):
    CHOSEN = auto()  # the router named a backend
    QUEUED = auto()  # all holders busy: wait for a slot
    GRANTED = auto()  # a slot freed up for this waiter
    FANNED_OUT = auto()  # a task of Fortress's own answers: a fan-out to every backend, a web search
    SENT = auto()  # the request is on a connection
    ANSWERED = auto()  # the backend's kind answered itself (a provider model's load): nothing sent
    HEAD = auto()  # the response head reached the client
    RETRY = auto()  # failed before any response byte: choose again
    COMPLETE = auto()  # the response is fully framed
    BROKEN = auto()  # the backend failed mid-response (reset, malformed, idle timeout)
    FAIL = auto()  # Fortress answers an error (no backend, first-byte timeout, refused)
    CLIENT_GONE = auto()


class IllegalTransition(RuntimeError):
    """An event the current state does not accept: a bug in whoever sent it."""


class _Moves(dict[Event, State]):
    """One state's row of the table; a lookup of an event it does not list raises IllegalTransition."""

    def __init__(self, state: State, moves: dict[Event, State]) -> None:
        super().__init__(moves)
        self.state = state

    def __missing__(self, event: Event) -> State:
        raise IllegalTransition(f"{event.name.lower()} in state {self.state.name.lower()}")


S, E = State, Event
_TABLE: dict[State, dict[Event, State]] = {
    S.CHOOSING: {
        E.CHOSEN: S.CONNECTING,
        E.QUEUED: S.WAITING,
        E.FANNED_OUT: S.SENT,
        E.FAIL: S.FAILED,
        E.CLIENT_GONE: S.GONE,
    },
    S.WAITING: {E.GRANTED: S.CONNECTING, E.FAIL: S.FAILED, E.CLIENT_GONE: S.GONE},
    S.CONNECTING: {
        E.SENT: S.SENT,
        E.ANSWERED: S.DONE,
        E.RETRY: S.CHOOSING,
        E.FAIL: S.FAILED,
        E.CLIENT_GONE: S.GONE,
    },
    S.SENT: {E.HEAD: S.RELAYING, E.RETRY: S.CHOOSING, E.FAIL: S.FAILED, E.CLIENT_GONE: S.GONE},
    S.RELAYING: {E.COMPLETE: S.DONE, E.BROKEN: S.CUT, E.CLIENT_GONE: S.GONE},
    S.DONE: {},
    S.CUT: {},
    S.FAILED: {},
    S.GONE: {},
}
TRANSITIONS: dict[State, _Moves] = {state: _Moves(state, moves) for state, moves in _TABLE.items()}
FINAL = frozenset(state for state, moves in TRANSITIONS.items() if not moves)
del S, E, _TABLE


def step(state: State, event: Event) -> State:
    """The state after `event`; IllegalTransition if the table has no such move."""
    return TRANSITIONS[state][event]
