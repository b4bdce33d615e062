"""HTML to web_fetch's answer (pure): text without scripts, titles, absolute links, charsets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fortress.search.page import MAX_LINKS, charset_of, decode, read_html, read_text

BASE = "https://site.example/dir/page.html"


@pytest.mark.parametrize(
    ("markup", "title", "content"),
    [
        ("<title>T</title><p>a</p><p>b</p>", "T", "a\nb"),
        ("<p>one\ntwo   three</p>", "", "one two three"),
        ("<pre>line 1\nline 2</pre><p>x\ny</p>", "", "line 1\nline 2\nx y"),
        ("<p>a<br>b<br/>c</p>", "", "a\nb\nc"),
        ("<script>alert('<p>x</p>')</script><style>p{}</style><p>seen</p>", "", "seen"),
        ("<noscript>enable js</noscript><template><p>t</p></template><p>ok</p>", "", "ok"),
        ("<svg><text>drawn</text></svg><p>after</p>", "", "after"),
        ("<svg/><p>after self-closing</p>", "", "after self-closing"),
        ("<p>Tom &amp; Jerry &lt;3 &#233; &eacute;</p>", "", "Tom & Jerry <3 \u00e9 \u00e9"),
        ("<title>first</title><title>second</title>", "first", "second"),
        ("<ul><li>a</li><li>b</li></ul>", "", "a\nb"),
        ("<td>1</td><td>2</td>", "", "1\n2"),
        ("<p>unclosed <b>bold", "", "unclosed bold"),
        ("<div><p>deep</div></p>", "", "deep"),
        ("", "", ""),
        ("plain words", "", "plain words"),
        ("<p>\u00a0nbsp\u00a0 </p>", "", "nbsp"),
    ],
)
def test_text_and_title(markup: str, title: str, content: str) -> None:
    page = read_html(markup, BASE)
    assert (page["title"], page["content"]) == (title, content)


def test_links_are_absolute_http_once_each_without_fragments() -> None:
    markup = (
        '<a href="other.html">r</a><a href="/root#x">r</a><a href="/root#y">again</a>'
        '<a href="//cdn.example/a">proto</a><a href="http://plain.example/">p</a>'
        '<a href="mailto:x@y">m</a><a href="javascript:void(0)">j</a><a href="ftp://f/">f</a><a>none</a>'
    )
    assert read_html(markup, BASE)["links"] == [
        "https://site.example/dir/other.html",
        "https://site.example/root",
        "https://cdn.example/a",
        "http://plain.example/",
    ]


def test_base_href_sets_where_relative_links_point() -> None:
    markup = '<base href="https://mirror.example/docs/"><a href="intro.html">i</a>'
    assert read_html(markup, BASE)["links"] == ["https://mirror.example/docs/intro.html"]


def test_links_are_capped() -> None:
    markup = "".join(f'<a href="/p{i}">x</a>' for i in range(MAX_LINKS + 50))
    assert len(read_html(markup, BASE)["links"]) == MAX_LINKS


def test_plain_text() -> None:
    assert read_text("  hello\n") == {"title": "", "content": "hello", "links": []}


@pytest.mark.parametrize(
    ("content_type", "head", "charset"),
    [
        ("text/html; charset=ISO-8859-1", b"", "ISO-8859-1"),
        ('text/html; charset="utf-8"', b"", "utf-8"),
        ("text/html", b'<html><meta charset="windows-1252">', "windows-1252"),
        ("text/html", b'<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">', "koi8-r"),
        ("text/html", b"<p>nothing said</p>", "utf-8"),
        ("text/html; charset=", b"", "utf-8"),
    ],
)
def test_charset_of(content_type: str, head: bytes, charset: str) -> None:
    assert charset_of(content_type, head) == charset


def test_decode_never_fails() -> None:
    assert decode("caf\u00e9".encode("latin-1"), "latin-1") == "caf\u00e9"
    assert decode(b"caf\xe9", "utf-8") == "caf\ufffd"
    assert decode(b"abc", "no-such-charset") == "abc"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/=\"' abpscriptlehf&#;x\n")) | st.characters(), max_size=200))
def test_any_markup_is_read_without_error(markup: str) -> None:
    page = read_html(markup, BASE)
    assert isinstance(page["title"], str) and isinstance(page["content"], str)
    assert all(link.startswith(("http://", "https://")) for link in page["links"])
