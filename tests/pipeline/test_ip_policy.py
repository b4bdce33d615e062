"""IP policy and client address: deny before allow, CIDRs in both families, XFF only from trusted peers."""

from __future__ import annotations

import pytest

from fortress.pipeline.ip_policy import IpPolicy, client_ip, normalize_ip, parse_ip


def test_empty_lists_allow_everyone() -> None:
    policy = IpPolicy([], [])
    assert policy.allows("203.0.113.7")
    assert policy.allows("2001:db8::1")


def test_deny_wins_over_allow() -> None:
    policy = IpPolicy(["10.0.0.0/8"], ["10.1.2.3"])
    assert policy.allows("10.9.9.9")
    assert not policy.allows("10.1.2.3")
    assert not policy.allows("192.168.1.1")  # not in a non-empty allow list


def test_cidr_edges_ipv4() -> None:
    policy = IpPolicy(["192.168.1.0/24"], [])
    assert policy.allows("192.168.1.0")
    assert policy.allows("192.168.1.255")
    assert not policy.allows("192.168.2.0")
    assert not policy.allows("192.168.0.255")


def test_ipv6_cidrs() -> None:
    policy = IpPolicy(["2001:db8::/32", "::1"], ["2001:db8:dead::/48"])
    assert policy.allows("2001:db8:1::5")
    assert policy.allows("::1")
    assert not policy.allows("2001:db8:dead::1")
    assert not policy.allows("2001:db9::1")


def test_ipv4_mapped_addresses_follow_ipv4_rules() -> None:
    policy = IpPolicy([], ["10.0.0.0/8"])
    assert not policy.allows("::ffff:10.2.3.4")
    assert not policy.allows("::ffff:a02:304")
    assert policy.allows("::ffff:11.2.3.4")


def test_ipv4_mapped_entries_become_ipv4_rules() -> None:
    policy = IpPolicy([], ["::ffff:10.0.0.0/104"])
    assert not policy.allows("10.200.0.1")
    assert policy.allows("11.0.0.1")


def test_families_do_not_cross_match() -> None:
    # ::/0 must not swallow IPv4, and 0.0.0.0/0 must not swallow IPv6
    assert IpPolicy([], ["::/0"]).allows("1.2.3.4")
    assert IpPolicy([], ["0.0.0.0/0"]).allows("2001:db8::1")


def test_host_bits_in_cidr_are_accepted() -> None:
    assert not IpPolicy([], ["10.1.2.3/8"]).allows("10.200.0.1")


@pytest.mark.parametrize("entry", ["10.0.0.256", "nonsense", "10.0.0.0/33", "", "2001:db8::/129"])
def test_invalid_entry_raises_naming_it(entry: str) -> None:
    with pytest.raises(ValueError, match="invalid IP address or CIDR") as info:
        IpPolicy([entry], [])
    assert repr(entry) in str(info.value)
    with pytest.raises(ValueError, match="ip_deny"):
        IpPolicy([], [entry])


@pytest.mark.parametrize("bad", ["", "localhost", "1.2.3", "1.2.3.4.5", "::g", "1.2.3.4:80", "\x00"])
def test_unparseable_address_is_refused_not_raised(bad: str) -> None:
    assert not IpPolicy([], []).allows(bad)


def test_memo_is_bounded_and_stays_correct() -> None:
    policy = IpPolicy(["10.0.0.0/8"], [], memo_size=8)
    for i in range(100):
        assert policy.allows(f"10.0.0.{i}")
        assert not policy.allows(f"11.0.0.{i}")
    assert len(policy._memo) <= 8


def test_parse_and_normalize() -> None:
    assert parse_ip("::ffff:1.2.3.4") == (4, 0x01020304)
    assert normalize_ip("::ffff:1.2.3.4") == "1.2.3.4"
    assert normalize_ip("2001:DB8:0::1") == "2001:db8::1"
    assert normalize_ip("fe80::1%eth0") == "fe80::1"
    assert normalize_ip("nope") is None


TRUSTED = IpPolicy(["127.0.0.1", "10.0.0.0/8"], [])


def test_untrusted_peer_ignores_xff() -> None:
    assert client_ip("203.0.113.9", "1.1.1.1", TRUSTED) == "203.0.113.9"


def test_no_trusted_proxies_ignores_xff() -> None:
    assert client_ip("127.0.0.1", "1.1.1.1", None) == "127.0.0.1"


def test_trusted_peer_uses_rightmost_untrusted_hop() -> None:
    # a client spoofing "6.6.6.6" cannot hide behind it: the proxy appended the real address last
    assert client_ip("127.0.0.1", "6.6.6.6, 198.51.100.4", TRUSTED) == "198.51.100.4"
    assert client_ip("127.0.0.1", "6.6.6.6, 198.51.100.4, 10.0.0.5", TRUSTED) == "198.51.100.4"


def test_trusted_peer_without_xff_is_the_client() -> None:
    assert client_ip("127.0.0.1", None, TRUSTED) == "127.0.0.1"
    assert client_ip("127.0.0.1", "", TRUSTED) == "127.0.0.1"


def test_all_hops_trusted_gives_leftmost() -> None:
    assert client_ip("127.0.0.1", "10.0.0.1, 10.0.0.2", TRUSTED) == "10.0.0.1"


@pytest.mark.parametrize("xff", ["1.1.1.1, junk", "junk", "1.1.1.1,,", "1.1.1.1:8080", "unknown"])
def test_malformed_xff_falls_back_to_peer(xff: str) -> None:
    assert client_ip("127.0.0.1", xff, TRUSTED) == "127.0.0.1"


def test_answers_are_normalised() -> None:
    assert client_ip("::ffff:127.0.0.1", " 2001:DB8::7 ", TRUSTED) == "2001:db8::7"
    assert client_ip("::ffff:203.0.113.9", None, TRUSTED) == "203.0.113.9"
