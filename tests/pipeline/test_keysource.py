"""Every way a client carries its key (DESIGN §6.1), in order, as pure decisions."""

from __future__ import annotations

from base64 import b64encode

from fortress.pipeline.keysource import presented_key

KEY = "fk_abcd1234_" + "s" * 43
OTHER = "fk_zzzz9999_" + "t" * 43


def basic(user: str, password: str) -> bytes:
    return b"Basic " + b64encode(f"{user}:{password}".encode())


def test_bearer_bare_and_x_api_key() -> None:
    assert presented_key(f"Bearer {KEY}".encode(), None, "", False) == KEY
    assert presented_key(f"bearer   {KEY} ".encode(), None, "", False) == KEY
    assert presented_key(KEY.encode(), None, "", False) == KEY  # bare
    assert presented_key(None, KEY.encode(), "", False) == KEY


def test_basic_with_the_key_as_password_or_user() -> None:
    assert presented_key(basic("x", KEY), None, "", False) == KEY
    assert presented_key(basic(KEY, ""), None, "", False) == KEY
    assert presented_key(basic(KEY, "anything"), None, "", False) == KEY
    assert presented_key(basic("x", "not-a-key"), None, "", False) == "not-a-key"  # refused as it is


def test_basic_that_is_not_base64_is_refused_whole() -> None:
    token = presented_key(f"Basic {KEY}".encode(), None, "", False)
    assert token is not None and token != KEY


def test_query_key_only_when_allowed() -> None:
    assert presented_key(None, None, f"a=1&api_key={KEY}", True) == KEY
    assert presented_key(None, None, f"api_key={KEY}", False) is None
    assert presented_key(None, None, "my_api_key=x", True) is None


def test_a_value_shaped_like_a_key_wins_in_order() -> None:
    assert presented_key(b"Bearer placeholder", KEY.encode(), "", False) == KEY
    assert presented_key(f"Bearer {KEY}".encode(), OTHER.encode(), "", False) == KEY
    assert presented_key(b"Bearer nope", b"also-nope", f"api_key={KEY}", True) == KEY
    assert presented_key(b"Bearer nope", b"also-nope", "", False) == "nope"  # the first present is refused


def test_empty_values_count_as_no_key() -> None:
    assert presented_key(b"Bearer ", None, "", False) is None
    assert presented_key(b"", b"  ", "api_key=", True) is None
    assert presented_key(None, None, "", True) is None
