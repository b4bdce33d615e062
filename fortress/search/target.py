"""Where web_fetch may connect: the SSRF policy, as pure functions over URLs and IP addresses.

A URL is parsed strictly (`parse_target`): http or https only, no credentials, no backslashes,
whitespace or control characters, a port in 1-65535, the host lower-cased without its trailing dot,
IDNA-encoded, and every numeric IPv4 spelling the C resolver accepts (`2130706433`, `0x7f.1`,
`0177.0.0.1`, `127.1`) read as the address it means. `addresses_for` answers the host's addresses
when they are known without DNS (IP literals; `localhost` and `*.localhost` are loopback, RFC 6761).
`refusal` says why one address may not be reached: unspecified, loopback, private, link-local,
cloud metadata, multicast, reserved or otherwise not publicly routable, looking inside IPv4-mapped,
NAT64 and 6to4 IPv6 addresses; `[search] fetch_allow` CIDRs lift the refusal.

The I/O layer resolves a name once, checks every address with `refusal`, connects to a checked
address itself (never by name again: no DNS-rebinding window) and runs each redirect through here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from fortress.search.errors import SearchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL = 8192
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Instance metadata services: named for a clearer refusal (most are link-local or private anyway).
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
_IETF_PROTOCOL = ipaddress.ip_network("192.0.0.0/24")  # Python 3.11 calls parts of it global


@dataclass(frozen=True, slots=True)
class Target:
    """One URL to GET, checked in form; its addresses are checked separately."""

    scheme: str  # http | https
    host: str  # lower-case, no trailing dot, IDNA; an IP literal in its canonical spelling
    port: int
    path: str  # what goes on the request line: path and query, never empty

    @property
    def ip(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def authority(self) -> str:
        """The Host header: the name (or bracketed IPv6 literal), with the port if not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"


def _bad(message: str) -> SearchError:
    return SearchError(400, f"web_fetch: {message}")


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton's reading of a dotted number (1-4 parts, decimal, 0x hex or 0-prefixed octal,
    the last part filling the remaining bytes); None when `host` is not written that way."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if re.fullmatch(r"0x[0-9a-f]+", part):
            values.append(int(part[2:], 16))
        elif re.fullmatch(r"0[0-7]*", part):
            values.append(int(part, 8))
        elif re.fullmatch(r"[1-9][0-9]*", part):
            values.append(int(part))
        else:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _host(raw: str) -> str:
    """The canonical host of a URL's authority (already stripped of port and brackets)."""
    if not raw:
        raise _bad("the URL has no host")
    if ":" in raw:  # an IPv6 literal (urlsplit took it from between brackets)
        if "%" in raw:
            raise _bad("IPv6 zone identifiers are not allowed")
        try:
            return str(ipaddress.IPv6Address(raw))
        except ValueError:
            raise _bad(f"invalid IPv6 address {raw!r}") from None
    host = raw[:-1] if raw.endswith(".") else raw
    try:
        host = host.encode("idna").decode("ascii").lower() if not host.isascii() else host.lower()
    except UnicodeError:
        raise _bad("the host name is not valid IDNA") from None
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):  # ends in a number: an IPv4 address or nothing (as browsers)
        address = parse_ipv4(host)
        if address is None:
            raise _bad(f"invalid IPv4 address {raw!r}")
        return str(address)
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _bad(f"invalid host name {raw!r}")
    return host


def parse_target(url: str) -> Target:
    """A URL web_fetch may try, or SearchError(400) saying what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise _bad("url must be a non-empty string")
    if len(url) > MAX_URL:
        raise _bad(f"the URL is longer than {MAX_URL} characters")
    if _BAD_CHARS.search(url):
        raise _bad("the URL contains whitespace, control characters or a backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _bad(f"invalid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _bad(f"only http and https URLs can be fetched, not {scheme or 'a relative URL'}")
    if "@" in parts.netloc:
        raise _bad("credentials in the URL are not allowed")
    if port == 0:
        raise _bad("port 0 is not allowed")
    host = _host(parts.hostname or "")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port or _DEFAULT_PORTS[scheme], path)


def addresses_for(target: Target) -> tuple[IPAddress, ...] | None:
    """The host's addresses when DNS is not needed (IP literal, localhost names), else None."""
    ip = target.ip
    if ip is not None:
        return (ip,)
    if target.host == "localhost" or target.host.endswith(".localhost"):
        return _LOOPBACK
    return None


@lru_cache(maxsize=64)
def compile_allow(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """`[search] fetch_allow` as networks (validated at config load)."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _kind(ip: IPAddress) -> str | None:
    """Why an address is not a public one, in words; None for a public address."""
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private and not ip.is_reserved:
        return "a private address"
    if ip.version == 6 and ip.is_site_local:
        return "a site-local address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global or (ip.version == 4 and ip in _IETF_PROTOCOL):
        return "not a publicly routable address"
    return None


def _allowed(ip: IPAddress, allow: Iterable[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in allow)


def refusal(ip: IPAddress, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why web_fetch may not connect to `ip` (a phrase such as "a loopback address"), or None.

    An IPv6 address carrying an IPv4 one (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16)
    is judged by the IPv4 address too: that is where the packets end up.
    """
    allow = tuple(allow)
    inner = _embedded_v4(ip)
    if _allowed(ip, allow) or (inner is not None and _allowed(inner, allow)):
        return None
    if inner is not None:
        why = _kind(inner)
        if why is not None:
            return f"{why} inside an IPv6 address"
        if ip.ipv4_mapped is not None or ip in _NAT64:  # only a wrapper: the IPv4 address decides
            return None
    return _kind(ip)


def check_addresses(target: Target, addresses: Iterable[IPAddress], allow: Iterable[IPNetwork]) -> None:
    """SearchError(403) if any address of the host is refused: a name that also points inward is not
    fetched at all, whichever address a connection would have used."""
    allow = tuple(allow)
    for ip in addresses:
        why = refusal(ip, allow)
        if why is not None:
            shown = target.host if str(ip) == target.host else f"{target.host} ({ip})"
            raise SearchError(403, f"web_fetch: forbidden: {shown} is {why}")
