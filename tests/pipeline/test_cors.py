"""CORS decisions (DESIGN §6.1): exact origins or "*", preflight answers, nothing for a foreign origin."""

from __future__ import annotations

import pytest

from fortress.pipeline.cors import Cors, check_origin

APP = b"http://app.example:3000"


def headers(reply) -> dict[bytes, bytes]:  # type: ignore[no-untyped-def]
    return dict(reply.headers)


def test_exact_origin_gets_the_grant_with_vary_and_exposed_headers() -> None:
    lines = Cors(["http://app.example:3000"]).allow(APP)
    assert b"Access-Control-Allow-Origin: http://app.example:3000\r\n" in lines
    assert b"Vary: Origin\r\n" in lines
    assert b"X-Request-ID" in lines and b"X-RateLimit-Remaining" in lines and b"Retry-After" in lines


def test_foreign_origin_and_no_configuration_get_nothing() -> None:
    assert Cors(["http://app.example:3000"]).allow(b"http://evil.example") == b""
    assert Cors(["http://app.example:3000"]).allow(b"http://app.example:3001") == b""
    assert Cors([]).allow(APP) == b""
    assert not Cors([]).enabled


def test_star_allows_every_origin_without_vary() -> None:
    lines = Cors(["*"]).allow(b"http://anything.example")
    assert lines.startswith(b"Access-Control-Allow-Origin: *\r\n") and b"Vary" not in lines


def test_preflight_grants_methods_headers_and_max_age() -> None:
    reply = Cors(["http://app.example:3000"]).preflight(
        APP, {b"POST"}, b"content-type, x-stainless-os,authorization"
    )
    h = headers(reply)
    assert reply.status == 204 and reply.body == b""
    assert h[b"Access-Control-Allow-Methods"] == b"OPTIONS, POST"
    allowed = h[b"Access-Control-Allow-Headers"]
    assert allowed.startswith(b"Authorization, Content-Type, X-API-Key")
    assert b"x-stainless-os" in allowed  # what the page asked to send is granted too
    assert int(h[b"Access-Control-Max-Age"]) > 0


def test_preflight_ignores_a_malformed_header_request() -> None:
    h = headers(Cors(["*"]).preflight(APP, {b"GET"}, b"bad header\r\nx: y"))
    assert h[b"Access-Control-Allow-Headers"] == b"Authorization, Content-Type, X-API-Key"


def test_preflight_from_a_foreign_origin_grants_nothing() -> None:
    h = headers(Cors(["http://app.example:3000"]).preflight(b"http://evil.example", {b"POST"}, None))
    assert set(h) == {b"Allow"}


@pytest.mark.parametrize(
    "origin", ["*", "http://localhost:3000", "https://app.example.com", "chrome-extension://abcdef"]
)
def test_origins_accepted_in_configuration(origin: str) -> None:
    assert check_origin(origin) is None


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/", "http://x/path", ""])
def test_origins_refused_in_configuration(origin: str) -> None:
    assert check_origin(origin)
