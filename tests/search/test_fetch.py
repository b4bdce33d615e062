"""web_fetch over real sockets: pages read, and every way inward refused (loopback, private, redirects)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from fortress.config import SearchConfig
from fortress.search.errors import SearchError
from fortress.search.service import WebSearch

from .conftest import Pages, dead_url

LOOPBACK = ("127.0.0.1/32",)


def service(allow: tuple[str, ...] = (), resolver: Any = None, **settings: Any) -> WebSearch:
    cfg = SearchConfig(searxng_url=dead_url(), fetch_allow=allow, **settings)
    return WebSearch(cfg, resolver=resolver) if resolver else WebSearch(cfg)


async def fetch(url: str, allow: tuple[str, ...] = LOOPBACK, resolver: Any = None, **settings: Any) -> dict:
    web = service(allow, resolver, **settings)
    try:
        return await web.fetch(url)
    finally:
        await web.aclose()


async def refused(
    url: str, allow: tuple[str, ...] = (), resolver: Any = None, **settings: Any
) -> SearchError:
    with pytest.raises(SearchError) as caught:
        await fetch(url, allow, resolver, **settings)
    return caught.value


async def test_a_page_is_read_into_ollama_s_shape(pages: Pages) -> None:
    answer = await fetch(pages.url("/page.html"))
    assert answer == {
        "title": "The Page",
        "content": "Welcome\nFirst paragraph with a relative link.\nSecond & last: absolute mail js",
        "links": [pages.url("/other.html"), "https://example.org/x"],
    }
    assert pages.hosts == [f"127.0.0.1:{pages.port}"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/plain.txt", {"title": "", "content": "just text", "links": []}),
        ("/latin1.html", {"title": "Caf\u00e9", "content": "na\u00efve", "links": []}),
        ("/meta-charset.html", {"title": "", "content": "\u20ac5", "links": []}),
    ],
)
async def test_text_and_charsets(pages: Pages, path: str, expected: dict) -> None:
    assert await fetch(pages.url(path)) == expected


async def test_without_fetch_allow_loopback_is_refused_and_never_contacted(pages: Pages) -> None:
    error = await refused(pages.url("/page.html"))
    assert error.status == 403
    assert error.message == "web_fetch: forbidden: 127.0.0.1 is a loopback address"
    assert pages.hosts == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "ftp://example.org/x",
        "data:text/html,hi",
        "javascript:alert(1)",
        "dict://127.0.0.1:11211/stat",
        "//example.org/x",
        "/relative",
    ],
)
async def test_only_http_and_https_urls(url: str) -> None:
    error = await refused(url, allow=("0.0.0.0/0",))
    assert error.status == 400 and "only http and https" in error.message


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.2", "127.0.0.2 is a loopback address"),  # allowed is 127.0.0.1/32 only
        ("10.0.0.1", "10.0.0.1 is a private address"),
        ("192.168.1.1", "192.168.1.1 is a private address"),
        ("169.254.169.254", "169.254.169.254 is a cloud metadata address"),
        ("[::1]", "::1 is a loopback address"),
        ("[::ffff:10.0.0.1]", "::ffff:a00:1 is a private address inside an IPv6 address"),
        ("localhost", "localhost (::1) is a loopback address"),
        ("0", "0.0.0.0 is an unspecified address"),
        ("0x0a.1", "10.0.0.1 is a private address"),
    ],
)
async def test_redirects_are_checked_at_every_hop(pages: Pages, host: str, why: str) -> None:
    target = f"http://{host}:{pages.port}/page.html"
    error = await refused(pages.url(f"/redirect?to={target}"), allow=LOOPBACK)
    assert (error.status, error.message) == (403, f"web_fetch: forbidden: {why}")
    assert len(pages.hosts) == 1  # the first hop only; the inward one was never connected to


@pytest.mark.parametrize("status", ["301", "303", "307", "308"])
async def test_every_redirect_status_is_followed_and_re_checked(pages: Pages, status: str) -> None:
    ok = await fetch(pages.url(f"/redirect?status={status}&to=/plain.txt"))
    assert ok["content"] == "just text"
    error = await refused(pages.url(f"/redirect?status={status}&to=http://10.1.1.1/"), allow=LOOPBACK)
    assert error.status == 403


async def test_a_redirect_to_a_file_url_is_refused(pages: Pages) -> None:
    error = await refused(pages.url("/redirect?to=file:///etc/passwd"), allow=LOOPBACK)
    assert error.status == 400 and "only http and https" in error.message


async def test_redirects_are_bounded_and_need_a_location(pages: Pages) -> None:
    error = await refused(pages.url("/loop"), allow=LOOPBACK)
    assert (error.status, error.message) == (502, "web_fetch: more than 5 redirects")
    assert len(pages.hosts) == 6
    error = await refused(pages.url("/no-location"), allow=LOOPBACK)
    assert error.status == 502 and "without a Location" in error.message


async def test_numeric_ip_spellings_are_read_as_the_address_they_mean(pages: Pages) -> None:
    for host in ("2130706433", "0x7f.1", "0177.0.0.1", "127.1", "127.0.0.1."):
        url = f"http://{host}:{pages.port}/plain.txt"
        assert (await fetch(url))["content"] == "just text"  # 127.0.0.1, which fetch_allow lets in
        error = await refused(url, allow=())
        assert error.message == "web_fetch: forbidden: 127.0.0.1 is a loopback address"


async def test_userinfo_tricks_are_refused() -> None:
    for url in ("http://evil@127.0.0.1/", "http://127.0.0.1@example.org/", "http://a:b@example.org/"):
        error = await refused(url, allow=("0.0.0.0/0",))
        assert error.status == 400 and "credentials" in error.message


class Resolver:
    """The DNS boundary: answers from a table, counting questions (a rebinding DNS changes its answer)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if not self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_names_are_checked_on_every_address_they_resolve_to() -> None:
    error = await refused("http://intranet.test/", resolver=Resolver(["10.1.2.3"]))
    assert error.message == "web_fetch: forbidden: intranet.test (10.1.2.3) is a private address"
    error = await refused("https://mixed.test/", resolver=Resolver(["93.184.216.34", "fe80::1"]))
    assert error.message == "web_fetch: forbidden: mixed.test (fe80::1) is a link-local address"
    error = await refused("http://meta.test/", resolver=Resolver(["fd00:ec2::254"]))
    assert "cloud metadata" in error.message


async def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(pages: Pages) -> None:
    """A rebinding DNS answers 127.0.0.1 (allowed) then 10.0.0.1: there is no second lookup to win."""
    dns = Resolver(["127.0.0.1"], ["10.0.0.1"])
    answer = await fetch(f"http://rebind.test:{pages.port}/echo-host", resolver=dns)
    assert answer["content"] == f"rebind.test:{pages.port}"  # the name went in Host, the IP was used
    assert dns.asked == [("rebind.test", pages.port)]


async def test_unknown_names_and_dead_ports_are_502() -> None:
    error = await refused("http://nowhere.test/", resolver=Resolver())
    assert error.status == 502 and "cannot resolve nowhere.test" in error.message
    error = await refused(dead_url() + "/", allow=LOOPBACK)
    assert error.status == 502 and "cannot connect to 127.0.0.1" in error.message


async def test_pages_are_size_capped_even_when_compressed(pages: Pages) -> None:
    big = await fetch(pages.url("/big.html"), max_fetch_bytes=4096)
    assert 4000 < len(big["content"]) <= 4096
    bomb = await fetch(pages.url("/bomb.html"), max_fetch_bytes=4096)
    assert 4000 < len(bomb["content"]) <= 4096


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/image.png", "cannot read image/png content, only HTML and text"),
        ("/missing", "answered HTTP 404"),
        ("/brotli.html", "unsupported content encoding 'br'"),
    ],
)
async def test_unusable_answers_are_502(pages: Pages, path: str, message: str) -> None:
    error = await refused(pages.url(path), allow=LOOPBACK)
    assert error.status == 502 and message in error.message


async def test_a_page_that_never_answers_times_out(pages: Pages) -> None:
    error = await refused(pages.url("/slow"), allow=LOOPBACK, timeout_s=0.5)
    assert (error.status, error.message) == (504, "web_fetch: no answer within 0.5s")


async def test_fetch_is_off_until_search_is_configured(pages: Pages) -> None:
    web = WebSearch(SearchConfig(fetch_allow=LOOPBACK))
    with pytest.raises(SearchError) as caught:
        await web.fetch(pages.url("/plain.txt"))
    await web.aclose()
    assert caught.value.status == 404 and pages.hosts == []
