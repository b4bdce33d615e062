"""Client address and IP allow/deny policy (docs/architecture.md, stages 2 and 3), pure and memoised.

Contract:
- `IpPolicy(allow, deny)` compiles CIDRs and plain addresses (IPv4 and IPv6) once, at config load or
  snapshot swap; a bad entry raises ValueError naming it. IPv4-mapped IPv6 (`::ffff:a.b.c.d`), in entries
  and in addresses, is treated as the IPv4 address, so a dual-stack listener cannot dodge an IPv4 rule.
- `allows(ip)` answers deny first, then allow (an empty allow list = everyone not denied). It never raises:
  a string that is not an IP address is refused (fail closed). Results are memoised per address in a
  dict cleared when it reaches `memo_size`, so a flood of distinct addresses costs memory O(memo_size).
- `client_ip(peer, xff, trusted)` is the socket peer, unless the peer is a trusted proxy: then the
  right-most X-Forwarded-For address that is not itself trusted (the first hop we cannot vouch for).
  Anything malformed in the header makes it fall back to the peer, never to a client-chosen value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Protocol

_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@lru_cache(maxsize=65536)
def parse_ip(text: str) -> tuple[int, int] | None:
    """'10.0.0.1' / '::1' / '::ffff:10.0.0.1' -> (version, integer); None when not an address."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if addr.version == 6:
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return 4, int(mapped)
        if addr.scope_id:  # 'fe80::1%eth0': the zone does not change who the peer is
            addr = ipaddress.IPv6Address(int(addr))
    return addr.version, int(addr)


@lru_cache(maxsize=65536)
def normalize_ip(text: str) -> str | None:
    """The canonical text of an address (mapped IPv6 -> IPv4), used as the rate/lockout bucket name."""
    parsed = parse_ip(text)
    if parsed is None:
        return None
    version, value = parsed
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def _compile(entries: Iterable[str], what: str) -> tuple[tuple[int, int, int], ...]:
    """Entries -> (version, network int, mask int); ValueError names the bad entry."""
    nets = []
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry.strip(), strict=False)
        except (ValueError, TypeError, AttributeError):
            raise ValueError(f"{what}: invalid IP address or CIDR {entry!r}") from None
        if net.version == 6 and net.prefixlen >= 96 and net.subnet_of(_V4_MAPPED):  # type: ignore[arg-type]
            net = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
        nets.append((net.version, int(net.network_address), int(net.netmask)))
    return tuple(nets)


def _matches(nets: tuple[tuple[int, int, int], ...], version: int, value: int) -> bool:
    return any(v == version and value & mask == network for v, network, mask in nets)


class IpPolicy:
    """Compiled allow/deny lists; `allows()` is the stage-3 decision (and the trusted-proxy test)."""

    __slots__ = ("_allow", "_deny", "_memo", "_memo_size", "known")

    def __init__(self, allow: Iterable[str], deny: Iterable[str], memo_size: int = 65536) -> None:
        self._allow = _compile(allow, "ip_allow")
        self._deny = _compile(deny, "ip_deny")
        self._memo: dict[str, bool] = {}
        self._memo_size = memo_size
        # known(ip): allows(ip) when already worked out, else None; a C call, for the chain's usual case
        self.known: Callable[[str], bool | None] = self._memo.get

    def allows(self, ip: str) -> bool:
        """Deny first, then allow; unparseable addresses are refused."""
        memo = self._memo
        answer = memo.get(ip)
        if answer is None:
            parsed = parse_ip(ip)
            if parsed is None:
                answer = False
            else:
                version, value = parsed
                answer = not _matches(self._deny, version, value) and (
                    not self._allow or _matches(self._allow, version, value)
                )
            if len(memo) >= self._memo_size:
                memo.clear()
            memo[ip] = answer
        return answer


class TrustedProxies(Protocol):
    """Anything that says whether an address is a trusted proxy (an IpPolicy with the list as `allow`)."""

    def allows(self, ip: str) -> bool: ...


def client_ip(peer_ip: str, xff: str | None, trusted: TrustedProxies | None) -> str:
    """Stage 2: who the client is. `xff` is every X-Forwarded-For header joined with ','.

    `trusted=None` (no trusted proxies configured) always answers the peer. The answer is normalised
    (mapped IPv6 -> IPv4) when it parses, so one client has one bucket name.
    """
    peer = normalize_ip(peer_ip) or peer_ip
    if trusted is None or not xff or not trusted.allows(peer):
        return peer
    hops = xff.split(",")
    for hop in reversed(hops):
        addr = normalize_ip(hop)
        if addr is None:
            return peer
        if not trusted.allows(addr):
            return addr
    # every hop is one of our proxies: the left-most is the closest we have to the client
    return normalize_ip(hops[0]) or peer
