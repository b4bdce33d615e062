"""The SSRF policy as pure functions: URL parsing, numeric IP spellings, address classes, fetch_allow."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fortress.search.errors import SearchError
from fortress.search.target import (
    Target,
    addresses_for,
    check_addresses,
    compile_allow,
    parse_ipv4,
    parse_target,
    refusal,
)


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://example.org", Target("http", "example.org", 80, "/")),
        ("https://Example.ORG./a/b?x=1&y=2#frag", Target("https", "example.org", 443, "/a/b?x=1&y=2")),
        ("HTTP://example.org:8080/", Target("http", "example.org", 8080, "/")),
        ("http://2130706433/", Target("http", "127.0.0.1", 80, "/")),
        ("http://0x7f.1/", Target("http", "127.0.0.1", 80, "/")),
        ("http://0X7F.0.0.1/", Target("http", "127.0.0.1", 80, "/")),
        ("http://0177.0.0.01/", Target("http", "127.0.0.1", 80, "/")),
        ("http://127.1/", Target("http", "127.0.0.1", 80, "/")),
        ("http://10.1/", Target("http", "10.0.0.1", 80, "/")),
        ("http://0/", Target("http", "0.0.0.0", 80, "/")),
        ("http://127.0.0.1./", Target("http", "127.0.0.1", 80, "/")),
        ("http://[::1]:8080/x", Target("http", "::1", 8080, "/x")),
        ("http://[0:0:0:0:0:ffff:7f00:1]/", Target("http", "::ffff:7f00:1", 80, "/")),
        ("http://[::ffff:127.0.0.1]/", Target("http", "::ffff:7f00:1", 80, "/")),
        ("http://b\u00fccher.example/", Target("http", "xn--bcher-kva.example", 80, "/")),
        ("http://LOCALHOST./", Target("http", "localhost", 80, "/")),
        ("http://my_host.internal/", Target("http", "my_host.internal", 80, "/")),
    ],
)
def test_parse_target(url: str, target: Target) -> None:
    assert parse_target(url) == target


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "only http and https URLs can be fetched, not file"),
        ("gopher://x/", "not gopher"),
        ("ftp://x/", "not ftp"),
        ("jar:http://x/!/", "not jar"),
        ("example.org/x", "not a relative URL"),
        ("", "url must be a non-empty string"),
        ("http://evil@127.0.0.1/", "credentials in the URL are not allowed"),
        ("http://127.0.0.1@evil.example/", "credentials"),
        ("http://u:p@example.org/", "credentials"),
        ("http://@example.org/", "credentials"),
        ("http://evil.example\\@127.0.0.1/", "backslash"),
        ("http://exa mple.org/", "whitespace"),
        ("http://example.org/\r\nHost: x", "control characters"),
        ("http://example.org:0/", "port 0 is not allowed"),
        ("http://example.org:65536/", "invalid URL"),
        ("http://example.org:http/", "invalid URL"),
        ("http:///path", "the URL has no host"),
        ("http://256.0.0.1/", "invalid IPv4 address"),
        ("http://1.2.3.4.5/", "invalid IPv4 address"),
        ("http://0x/", "invalid IPv4 address"),
        ("http://08.0.0.1/", "invalid IPv4 address"),
        ("http://example.123/", "invalid IPv4 address"),
        ("http://[fe80::1%25eth0]/", "zone identifiers"),
        ("http://[::1/", "invalid URL"),
        ("http://exa%6dple.org/", "invalid host name"),
        ("http://-bad-.org/", "invalid host name"),
        ("http://a..b/", "invalid host name"),
        ("http://" + "a" * 64 + ".org/", "invalid host name"),
        ("http://example.org/" + "a" * 9000, "longer than 8192"),
    ],
)
def test_parse_target_refuses(url: str, message: str) -> None:
    with pytest.raises(SearchError) as caught:
        parse_target(url)
    assert caught.value.status == 400
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
        ("2002:5db8:d822::1", None),  # 6to4 around a public IPv4
        ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8 (DNS64 networks)
        ("::ffff:8.8.8.8", None),
        ("127.0.0.1", "a loopback address"),
        ("127.255.255.254", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.0.1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.170.2", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("192.0.0.192", "a cloud metadata address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("fec0::1", "a site-local address"),
        ("100.64.0.1", "not a publicly routable address"),  # carrier-grade NAT
        ("198.18.0.1", "a private address"),  # benchmarking
        ("192.0.0.8", "not a publicly routable address"),
        ("192.0.2.1", "a private address"),  # documentation
        ("::ffff:127.0.0.1", "a loopback address inside an IPv6 address"),
        ("::ffff:169.254.169.254", "a cloud metadata address inside an IPv6 address"),
        ("64:ff9b::a00:1", "a private address inside an IPv6 address"),
        ("2002:7f00:1::", "a loopback address inside an IPv6 address"),
        ("2002:c0a8:101::1", "a private address inside an IPv6 address"),
        ("::7f00:1", "a reserved address"),  # IPv4-compatible (deprecated)
        ("2001:db8::1", "a private address"),
    ],
)
def test_refusal(address: str, why: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize(
    ("allow", "address", "allowed"),
    [
        (("127.0.0.1/32",), "127.0.0.1", True),
        (("127.0.0.1/32",), "127.0.0.2", False),
        (("127.0.0.1/32",), "::ffff:127.0.0.1", True),  # the same destination
        (("127.0.0.1/32",), "::1", False),
        (("10.0.0.0/8", "::1/128"), "::1", True),
        (("10.0.0.0/8",), "10.200.3.4", True),
        (("10.0.0.0/8",), "192.168.1.1", False),
        (("169.254.169.254/32",), "169.254.169.254", True),  # the operator said so
        (("fd00::/8",), "fd00:ec2::254", True),
        (("0.0.0.0/0",), "::1", False),  # an IPv4 range never allows an IPv6 address
    ],
)
def test_fetch_allow_lifts_refusals(allow: tuple[str, ...], address: str, allowed: bool) -> None:
    assert (refusal(ipaddress.ip_address(address), compile_allow(allow)) is None) is allowed


def test_addresses_known_without_dns() -> None:
    assert addresses_for(parse_target("http://127.1/")) == (ipaddress.ip_address("127.0.0.1"),)
    local = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
    assert addresses_for(parse_target("http://localhost:8080/")) == local
    assert addresses_for(parse_target("http://api.localhost/")) == local  # RFC 6761: never asked of DNS
    assert addresses_for(parse_target("http://example.org/")) is None


def test_every_address_of_a_name_is_checked() -> None:
    target = parse_target("http://both.example/")
    public, private = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")
    check_addresses(target, [public], ())
    with pytest.raises(SearchError) as caught:
        check_addresses(target, [public, private], ())
    assert (caught.value.status, caught.value.message) == (
        403,
        "web_fetch: forbidden: both.example (10.0.0.7) is a private address",
    )


def test_target_authority_and_url() -> None:
    assert parse_target("https://example.org:443/x").authority == "example.org"
    assert parse_target("http://[::1]:81/").authority == "[::1]:81"
    assert parse_target("http://0x7f.1:81/a?b").url == "http://127.0.0.1:81/a?b"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789abcdefx.", min_size=1, max_size=24))
def test_parse_ipv4_agrees_with_inet_aton(text: str) -> None:
    """Numeric host spellings mean what the C library (so curl, wget, getaddrinfo) thinks they mean."""
    try:
        expected = socket.inet_ntoa(socket.inet_aton(text))
    except OSError:
        expected = None
    got = parse_ipv4(text)
    assert (str(got) if got else None) == expected


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_parse_target_only_ever_answers_a_target_or_a_400(text: str) -> None:
    for url in (text, "http://" + text, "https://" + text + "/"):
        try:
            target = parse_target(url)
        except SearchError as exc:
            assert exc.status == 400
        else:
            assert target.scheme in ("http", "https") and 0 < target.port < 65536
            assert parse_target(target.url) == target  # canonical: parsing it again changes nothing
