"""Index pages as real servers write them, parsed into direct children."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluidcache.common import errors
from fluidcache.ufs.http import (
    HttpUfs,
    IndexParser,
    _child,
    _linked_child,
    parse_index,
    parse_json_index,
    parse_listing,
)

PAGES = Path(__file__).parent / "pages"


def page(name: str) -> str:
    return (PAGES / name).read_text()


def test_nginx_autoindex() -> None:
    assert parse_index("http://h:8080/data/", page("nginx.html")) == [
        ("d#ir", True),
        ("sub dir", True),
        ("100%.txt", False),
        ("amp&'\"<>.txt", False),
        ("q?x.txt", False),
        ("ünï.txt", False),
    ]


def test_apache_table_ignores_sort_parent_and_icon_links() -> None:
    assert parse_index("http://example.org/pub/data/", page("apache_table.html")) == [
        ("images", True),
        ("a#b.txt", False),
        ("a:b.bin", False),
        ("café menu.txt", False),
        ("R&D.txt", False),
    ]


def test_apache_pre_format() -> None:
    assert parse_index("http://example.org/pub/data/", page("apache_pre.html")) == [
        ("images", True),
        ("notes v2.txt", False),
    ]


def test_python_http_server() -> None:
    assert parse_index("http://127.0.0.1:1/data/", page("python_http_server.html")) == [
        ("sub dir", True),
        ("link", False),
        ("ünï#x.txt", False),
    ]


def test_only_direct_children_of_the_listed_dir() -> None:
    page = """
    <a href="/data/abs.txt">abs</a> <a href="http://h/data/full.txt">full</a>
    <a href="HTTP://H:80/data/port.txt">port</a>
    <a href="http://other/data/x.txt">other host</a> <a href="https://h/data/y.txt">other scheme</a>
    <a href="sub/deeper.txt">deeper</a> <a href="/elsewhere/z.txt">elsewhere</a>
    <a href="/data/">self</a> <a href="./">dot</a> <a href="#top">anchor</a>
    <a href="x.txt#frag">fragment</a> <a href="mailto:a@b">mail</a>
    <a href="javascript:void(0)">js</a>
    <a href="http://[bad">broken</a> <a>no href</a> <a href="">empty</a> <a href="%2e%2e/">dots</a>
    <a href="d/">d</a> <a href="d">d again as a file</a>
    """
    assert parse_index("http://h/data/", page) == [
        ("abs.txt", False),
        ("full.txt", False),
        ("port.txt", False),
        ("d", True),
    ]


def test_links_relative_to_a_page_without_trailing_slash_base() -> None:
    assert parse_index("http://h/", '<a href="a.txt">a</a><a href="/b/">b</a>') == [
        ("a.txt", False),
        ("b", True),
    ]


@pytest.mark.parametrize(
    ("root", "path", "uri"),
    [
        ("http://h/data/", "", "http://h/data/"),
        ("http://h/data", "a b/c#d?.txt", "http://h/data/a%20b/c%23d%3F.txt"),
        ("https://H:8443/", "ünï/100%", "https://H:8443/%C3%BCn%C3%AF/100%25"),
        ("http://h/my%20data/", "x", "http://h/my%20data/x"),
    ],
)
def test_uri_and_relpath_round_trip(root: str, path: str, uri: str) -> None:
    ufs = HttpUfs(root)
    assert ufs.uri(path) == uri
    assert ufs.relpath(uri) == path
    assert ufs.relpath(uri.replace("%C3%BC", "%c3%bc")) == path


def test_relpath_refuses_foreign_uris() -> None:
    ufs = HttpUfs("http://h/data/")
    assert ufs.relpath("http://h/data") == ""
    for uri in ("http://h/other/x", "http://g/data/x", "https://h/data/x", "http://h/data/x?y"):
        with pytest.raises(errors.InvalidArgument):
            ufs.relpath(uri)
    with pytest.raises(errors.InvalidArgument):
        ufs.uri("../etc/passwd")


def test_bad_roots_and_options() -> None:
    for root in ("http:///x", "ftp://h/x", "http://h/x?q=1"):
        with pytest.raises(errors.ConfigError):
            HttpUfs(root)
    with pytest.raises(errors.ConfigError, match="timeout"):
        HttpUfs("http://h/", {"timeout": "soon"})
    with pytest.raises(errors.ConfigError, match="verify_tls"):
        HttpUfs("http://h/", {"verify_tls": "maybe"})


def test_exact_sizes_and_dates_from_listings() -> None:
    """A listing's exact sizes spare a HEAD per file; sizes with a unit are not exact."""
    nginx = {e.name: e for e in parse_listing("http://h:8080/data/", page("nginx.html"))}
    assert nginx["100%.txt"].size == 3 and nginx["ünï.txt"].size == 3
    assert nginx["100%.txt"].mtime == 1795442520.0  # 23-Nov-2026 14:02 UTC
    assert nginx["d#ir"].size is None and nginx["d#ir"].is_dir
    apache = {
        e.name: e for e in parse_listing("http://example.org/pub/data/", page("apache_table.html"))
    }
    assert apache["café menu.txt"].size == 12  # Apache prints bytes exactly under 1 KiB
    assert apache["a#b.txt"].size is None  # "1.2K": not exact, so it is HEADed
    assert apache["a:b.bin"].size is None  # " 12M"


def test_nginx_json_index() -> None:
    body = (
        b'[{"name":"a b.bin","type":"file","mtime":"Tue, 02 Dec 2025 08:05:00 GMT","size":131072},'
        b'{"name":"sub","type":"directory","mtime":"Tue, 02 Dec 2025 08:05:00 GMT"}]'
    )
    entries = parse_json_index("http://h/data/", body)
    assert [(e.name, e.is_dir, e.size) for e in entries] == [
        ("a b.bin", False, 131072),
        ("sub", True, None),
    ]
    assert entries[0].mtime == 1764662700.0
    with pytest.raises(errors.SourceError):
        parse_json_index("http://h/data/", b'{"files": []}')


@settings(max_examples=1000)
@given(
    href=st.text(st.sampled_from("ab.%2F0/:?#\\ \x00\t\x7fé"), min_size=1, max_size=12),
    dir_url=st.sampled_from(
        ["http://h/", "http://h/data/", "http://h:8080/a%20b/c/", "http://h/x"]
    ),
)
def test_plain_names_are_read_as_the_links_they_are(href: str, dir_url: str) -> None:
    """The shortcut for plain relative names finds what resolving the link finds."""
    link = href.strip()
    if link and not link.startswith(("?", "#")):  # not links to entries, whatever they are
        assert _child(dir_url, href) == _linked_child(dir_url, link)


_PIECES = [
    '<a href="f-1.bin">f-1.bin</a>     05-Dec-2026 21:27    131072\r\n',
    '<a href="d/">d/</a>     05-Dec-2026 21:27       -\r\n',
    '<a href="a&amp;b">a&amp;b</a>  05-Dec-2026 21:27  12\r\n',
    '<a href="x%20y.txt">x y.txt</a>  2026-12-05 21:27  7\n',
    '<a href="../">../</a>\r\n',
    '<A HREF="up.txt">UP</A> 05-Dec-2026 21:27 3\n',
    '<tr><td><a href="t.txt">t.txt</a></td><td align="right">2026-12-05 21:27  </td>'
    '<td align="right">99</td></tr>\n',
    '<!-- <a href="hidden.txt">hidden</a> 05-Dec-2026 21:27 5 -->',
    "<script>var s = '<a href=\"js.txt\">js</a> 1';</script>",
    '<li><a href="li.txt">li.txt</a></li>\n',
    '<a href="q.txt">q &lt; r</a> 05-Dec-2026 21:27 &#49;2\n',
    "<html><head><title>Index of /d/</title></head><body><h1>Index of /d/</h1><hr><pre>",
    "</pre><hr></body></html>\n",
    "text & more ",
    "<",
]


def _parsed(page: str, cuts: list[int], fast: bool) -> list[object]:
    parser = IndexParser("http://h/d/")
    parser.fast = fast
    bounds = [0, *sorted(c % (len(page) + 1) for c in cuts), len(page)]
    for a, b in itertools.pairwise(bounds):
        parser.feed(page[a:b])
    parser.close()
    return list(parser.take(final=True))


@settings(max_examples=500)
@given(
    pieces=st.lists(st.sampled_from(_PIECES), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_plain_links_taken_without_the_html_parser_read_as_the_parser_reads_them(
    pieces: list[str], cuts: list[int]
) -> None:
    """nginx's lines taken directly give what the HTML parser gives, however the page is cut
    into pieces, beside tables, comments, scripts, character references and upper case."""
    page = "".join(pieces)
    assert _parsed(page, cuts, fast=True) == _parsed(page, [], fast=False)


def test_nginx_page_of_many_entries_read_alike_both_ways() -> None:
    page = page_of(500)
    whole = _parsed(page, [], fast=False)
    assert len(whole) == 500
    assert _parsed(page, [4096 * i for i in range(1, 40)], fast=True) == whole


def page_of(n: int) -> str:
    lines = [
        f'<a href="f-{i:05d}.bin">f-{i:05d}.bin</a>   05-Dec-2026 21:27   {i}\r\n' for i in range(n)
    ]
    return (
        "<html>\r\n<head><title>Index of /d/</title></head>\r\n<body>\r\n<h1>Index of /d/</h1>"
        '<hr><pre><a href="../">../</a>\r\n' + "".join(lines) + "</pre><hr></body>\r\n</html>\r\n"
    )
