"""The exchange's transition table on its own (h11 style): the paths a request can take, and that every
other move is refused."""

from __future__ import annotations

import pytest

from fortress.proxy.states import FINAL, TRANSITIONS, Event, IllegalTransition, State, step


def walk(*events: Event, start: State = State.CHOOSING) -> list[State]:
    states = [start]
    for event in events:
        states.append(step(states[-1], event))
    return states


def test_a_plain_request() -> None:
    assert walk(Event.CHOSEN, Event.SENT, Event.HEAD, Event.COMPLETE)[-1] is State.DONE


def test_retry_before_the_first_byte_goes_back_to_choosing() -> None:
    connect_error = walk(Event.CHOSEN, Event.RETRY)
    assert connect_error[-1] is State.CHOOSING
    bad_gateway = walk(Event.CHOSEN, Event.SENT, Event.RETRY, Event.CHOSEN, Event.SENT, Event.HEAD)
    assert bad_gateway[-1] is State.RELAYING
    with pytest.raises(IllegalTransition, match="retry in state relaying"):
        step(State.RELAYING, Event.RETRY)  # once a byte reached the client there is no retry


def test_cut_mid_stream_and_idle_timeout_end_in_cut() -> None:
    assert walk(Event.CHOSEN, Event.SENT, Event.HEAD, Event.BROKEN)[-1] is State.CUT
    with pytest.raises(IllegalTransition):
        step(State.SENT, Event.BROKEN)  # before the head a broken backend is a retry or a failure


def test_first_byte_timeout_and_local_errors_end_in_failed() -> None:
    assert walk(Event.CHOSEN, Event.SENT, Event.FAIL)[-1] is State.FAILED
    assert walk(Event.FAIL)[-1] is State.FAILED  # unknown model, no healthy backend
    assert walk(Event.QUEUED, Event.FAIL)[-1] is State.FAILED  # queue timeout
    with pytest.raises(IllegalTransition):
        step(State.RELAYING, Event.FAIL)  # no error reply after a response head


def test_a_kind_that_answers_itself_ends_done_without_sending() -> None:
    assert walk(Event.CHOSEN, Event.ANSWERED)[-1] is State.DONE  # a provider model's load or unload
    with pytest.raises(IllegalTransition, match="answered in state sent"):
        step(State.SENT, Event.ANSWERED)  # once the request went out, the backend answers


def test_waiting_for_a_slot_and_fanning_out() -> None:
    assert walk(Event.QUEUED, Event.GRANTED, Event.SENT)[-1] is State.SENT
    assert walk(Event.FANNED_OUT, Event.HEAD, Event.COMPLETE)[-1] is State.DONE


@pytest.mark.parametrize("state", [s for s in State if s not in FINAL])
def test_the_client_may_leave_in_every_live_state(state: State) -> None:
    assert step(state, Event.CLIENT_GONE) is State.GONE


@pytest.mark.parametrize("state", sorted(FINAL))
def test_final_states_accept_nothing(state: State) -> None:
    for event in Event:
        with pytest.raises(IllegalTransition):
            step(state, event)


def test_the_table_is_closed() -> None:
    assert {State.DONE, State.CUT, State.FAILED, State.GONE} == FINAL
    reachable = {State.CHOOSING} | {s for moves in TRANSITIONS.values() for s in moves.values()}
    assert reachable == set(State)
