"""How the client side finds what a header name means (protocol.py `_SPELT`, a fortress.http.spellings
table): one lookup per header in any spelling, and a table of learnt spellings that a client choosing random
names cannot grow past its bound.
"""

from __future__ import annotations

from fortress.http.spellings import MAX_NAMES, Spellings
from fortress.proxy.protocol import _DROP, _FORWARD, _NOT_FORWARDED, _SPELT


def test_every_spelling_of_a_name_means_the_same() -> None:
    assert _SPELT[b"Authorization"] == _SPELT[b"AUTHORIZATION"] == _SPELT[b"aUtHoRiZaTiOn"] == "authorization"
    assert _SPELT[b"x-FORWARDED-for"] == "xff"
    assert _SPELT[b"Transfer-encoding"] == "chunked"
    assert _SPELT[b"PROXY-CONNECTION"] == "connection"
    assert _SPELT[b"COOKIE"] == _SPELT[b"Host"] == _DROP
    assert _SPELT[b"X-Stainless-Lang"] == _SPELT[b"content-TYPE"] == _FORWARD


def test_learnt_spellings_stay_within_the_bound() -> None:
    table = Spellings(_NOT_FORWARDED, _FORWARD)
    known = len(table)
    assert table[b"HOST"] == _DROP and b"HOST" in table  # learnt: the next one is a plain lookup
    assert table[b"x-" + b"a" * 100] == _FORWARD and len(table) == known + 1  # a long name is not kept
    for i in range(2 * MAX_NAMES):
        assert table[b"X-Random-%d" % i] == _FORWARD
    assert len(table) == MAX_NAMES
    assert table[b"X-API-KEY"] == "x_api_key" and table[b"CONTENT-LENGTH"] == "content_length"  # past it too
    assert len(table) == MAX_NAMES
