from __future__ import annotations

import gzip
import threading
import time
import tracemalloc
import zlib

import pytest

from crawl.fetching import Fetcher, extract_links, parse_content_type, parse_links, x_robots_directives
from crawl.tests.site import in_thread, layered_gzip


@pytest.fixture
def fetcher():
    with Fetcher(
        allow_private=True, timeout=0.5, max_bytes=1024 * 1024, max_redirects=3, user_agent="ragsite-test/1.0"
    ) as f:
        yield f


def test_it_fetches_a_page_with_its_validators(site, fetcher):
    result = fetcher.fetch(f"{site.url}/docs/a.html")
    assert result.ok
    assert result.status == 200
    assert result.content_type == "text/html"
    assert result.charset == "utf-8"
    assert b"Alpha page" in result.content
    assert result.etag.startswith('"')
    assert result.last_modified.endswith("GMT")
    assert site.requests[-1].headers["user-agent"] == "ragsite-test/1.0"


def test_a_matching_etag_means_not_modified(site, fetcher):
    first = fetcher.fetch(f"{site.url}/docs/a.html")
    again = fetcher.fetch(f"{site.url}/docs/a.html", etag=first.etag)
    assert again.not_modified
    assert again.content == b""
    assert site.requests[-1].headers["if-none-match"] == first.etag


def test_an_unchanged_last_modified_means_not_modified(site, fetcher):
    first = fetcher.fetch(f"{site.url}/docs/a.html")
    again = fetcher.fetch(f"{site.url}/docs/a.html", last_modified=first.last_modified)
    assert again.not_modified


def test_a_stale_etag_gets_the_new_content(site, fetcher):
    again = fetcher.fetch(f"{site.url}/docs/a.html", etag='"outdated"')
    assert again.ok
    assert b"Alpha page" in again.content


def test_a_server_that_hangs_fails_with_a_timeout(site, fetcher):
    result = fetcher.fetch(f"{site.url}/slow")
    assert result.error_code == "timeout"
    assert "Timed out" in result.error


def test_a_server_error_fails_with_its_status(site, fetcher):
    result = fetcher.fetch(f"{site.url}/error500")
    assert result.status == 500
    assert result.error == "HTTP 500 Internal Server Error."


@pytest.mark.parametrize(("path", "status"), [("/nowhere.html", 404), ("/gone", 410)])
def test_missing_pages_are_reported_as_gone(site, fetcher, path, status):
    result = fetcher.fetch(f"{site.url}{path}")
    assert result.status == status
    assert result.gone
    assert not result.ok


def test_a_redirect_loop_is_detected(site, fetcher):
    result = fetcher.fetch(f"{site.url}/loop-a")
    assert result.error_code == "redirect_loop"
    assert site.paths() == ["/loop-a", "/loop-b"]


def test_endless_redirects_stop_at_the_limit(site, fetcher):
    result = fetcher.fetch(f"{site.url}/endless/0")
    assert result.error_code == "too_many_redirects"
    assert result.error == "More than 3 redirects."
    assert len(site.paths()) == 4


def test_redirects_are_followed_and_each_target_rechecked(site, fetcher):
    ok = fetcher.fetch(f"{site.url}/redirect-to?to=/docs/b.html")
    assert ok.ok
    assert ok.final_url == f"{site.url}/docs/b.html"
    assert ok.redirects == [f"{site.url}/docs/b.html"]

    refused = fetcher.fetch(
        f"{site.url}/redirect-to?to={site.other_host_url}/docs/a.html",
        redirect_check=lambda url: None if url.startswith(site.url) else "another host",
    )
    assert refused.error_code == "out_of_scope"
    assert "another host" in refused.error
    assert "/docs/a.html" not in site.paths()


def test_a_redirect_to_another_scheme_fails(site, fetcher):
    result = fetcher.fetch(f"{site.url}/redirect-to?to=ftp://example.com/file")
    assert result.error_code == "bad_redirect"


@pytest.mark.parametrize("path", ["/huge", "/huge-chunked"])
def test_a_huge_body_fails_as_too_large(site, fetcher, path):
    result = fetcher.fetch(f"{site.url}{path}")
    assert result.error_code == "too_large"
    assert result.content == b""


def test_a_body_can_be_truncated_instead(site, fetcher):
    result = fetcher.fetch(f"{site.url}/huge-chunked", max_bytes=10_000, truncate=True)
    assert result.ok
    assert len(result.content) == 10_000


def test_only_page_content_types_are_accepted(site, fetcher):
    result = fetcher.fetch(f"{site.url}/image.gif")
    assert result.error_code == "unsupported_type"
    assert result.error == "Unsupported content type image/gif."
    for path, mime in [("/docs/notes.txt", "text/plain"), ("/docs/guide.md", "text/markdown")]:
        assert fetcher.fetch(f"{site.url}{path}").content_type == mime


def test_html_without_a_content_type_is_sniffed(site, fetcher):
    result = fetcher.fetch(f"{site.url}/html-no-type")
    assert result.ok
    assert result.content_type == "text/html"


def test_pdf_is_accepted(site, fetcher):
    site.overrides["/doc.pdf"] = (200, {"Content-Type": "application/pdf"}, b"%PDF-1.4\n%%EOF\n")
    assert fetcher.fetch(f"{site.url}/doc.pdf").content_type == "application/pdf"


def test_an_unreachable_port_fails_with_a_connection_error(fetcher):
    result = fetcher.fetch("http://127.0.0.1:9/")
    assert result.error_code == "connection"


def test_content_types_are_parsed():
    assert parse_content_type("Text/HTML; Charset=ISO-8859-1") == ("text/html", "iso-8859-1")
    assert parse_content_type("") == ("", "")
    assert parse_content_type("garbage") == ("", "")


def test_links_are_extracted_canonical_and_deduplicated():
    html = b"""<html><head><base href="/sub/"></head><body>
        <a href="x.html">x</a><a href="x.html#part">x again</a>
        <a href="mailto:a@b.c">mail</a><a href="javascript:void(0)">js</a><a href="#top">top</a>
        <a rel="nofollow external" href="/nf">nf</a>
        <a href="http://Other.org:80/y?utm_source=s">o</a>
        <map><area href="/area.html"></map>
    </body></html>"""
    assert extract_links(html, "http://h/a/b.html") == [
        "http://h/sub/x.html",
        "http://other.org/y",
        "http://h/area.html",
    ]
    with_nofollow = extract_links(html, "http://h/a/b.html", respect_nofollow=False)
    assert "http://h/nf" in with_nofollow


def test_a_target_linked_many_times_with_fragments_is_one_link_in_first_seen_order():
    html = b"""<html><body>
        <a rel="nofollow" href="a.html#one">nf</a><a href="b.html#x">b</a><a href="a.html#two">a</a>
        <a href=" a.html#three ">a</a><a href="b.html">b</a><a href="#local">self</a>
        <a href="c.html?utm_source=s#k">c</a><a href="c.html?utm_source=s">c</a>
    </body></html>"""
    links = extract_links(html, "http://h/d/p.html")
    assert links == ["http://h/d/b.html", "http://h/d/a.html", "http://h/d/c.html"]
    assert extract_links(html, "http://h/d/p.html", tracking_params=[]) == [
        "http://h/d/b.html",
        "http://h/d/a.html",
        "http://h/d/c.html?utm_source=s",
    ]


def test_robots_meta_tags_are_reported():
    page = parse_links(
        b'<html><head><meta name="robots" content="noindex, nofollow"></head><a href="/x">x</a></html>', "http://h/"
    )
    assert page.noindex
    assert page.nofollow
    assert page.links == []


def test_garbage_yields_no_links():
    assert extract_links(b"", "http://h/") == []
    assert extract_links(b"\x00\x01binary", "http://h/") == []


def test_x_robots_tag_applies_unless_addressed_to_another_crawler():
    assert x_robots_directives({"x-robots-tag": "noindex, nofollow"}) == {"noindex", "nofollow"}
    assert x_robots_directives({"x-robots-tag": "otherbot: noindex"}) == set()


BOMB_FILL = 128 * 1024 * 1024


def traced_peak(action):
    """Run ``action`` and return (its result, the peak of Python memory allocated meanwhile)."""
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("encoding", ["gzip, gzip, gzip", "gzip,x-gzip , gzip", "gzip, gzip, deflate"])
def test_a_layered_compression_bomb_stops_at_the_cap_once_decoded(site, fetcher, encoding):
    head = b"<html><body><p>" + b"bomb " * 1000 + b"</p>"
    body = layered_gzip(head, BOMB_FILL, 3)
    if encoding.endswith("deflate"):
        # The outer layer (listed last: applied last) as deflate instead.
        body = zlib.compress(gzip.decompress(body), 9)
    site.overrides["/bomb.html"] = (200, {"Content-Type": "text/html", "Content-Encoding": encoding}, body)
    result, peak = traced_peak(lambda: fetcher.fetch(f"{site.url}/bomb.html"))
    assert result.error_code == "too_large"
    assert "once decoded" in result.error
    # The cap is 1 MiB; reading more than a few MiB would mean a layer was inflated whole.
    assert peak < 16 * 1024 * 1024, f"{peak} bytes allocated while reading {len(body)} bytes"


def test_a_layered_body_within_the_cap_is_decoded(site, fetcher):
    head = b"<html><body><p>" + b"fine " * 1000 + b"</p>"
    site.overrides["/layers.html"] = (
        200,
        {"Content-Type": "text/html", "Content-Encoding": "gzip, gzip"},
        gzip.compress(gzip.compress(head)),
    )
    result = fetcher.fetch(f"{site.url}/layers.html")
    assert result.ok
    assert result.content == head


@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        ("br", b"\x0b\x02\x80hello\x03", "Unsupported Content-Encoding 'br'"),
        ("gzip", b"\x1f\x8b\x08\x00garbage-not-gzip", "gzip data is corrupt"),
        ("gzip, gzip, gzip, gzip", b"", "at most 3 layers"),
    ],
)
def test_unsupported_or_corrupt_encodings_fail_the_page_with_the_reason(site, fetcher, encoding, body, message):
    site.overrides["/enc.html"] = (200, {"Content-Type": "text/html", "Content-Encoding": encoding}, body)
    result = fetcher.fetch(f"{site.url}/enc.html")
    assert result.error_code == "decoding"
    assert message in result.error


def test_only_encodings_that_can_be_bounded_are_requested(site, fetcher):
    fetcher.fetch(f"{site.url}/docs/a.html")
    assert site.requests[-1].headers["accept-encoding"] == "gzip, deflate"


def test_a_trickled_body_fails_at_the_total_deadline(site):
    # 10,000 bytes at 9 bytes/s would take 18 minutes; every read waits far less than the
    # 0.5 s read timeout, so only the total deadline (4 x 0.5 s) can end it.
    with Fetcher(allow_private=True, timeout=0.5) as fetcher:
        result = in_thread(lambda: fetcher.fetch(f"{site.url}/trickle?rate=9&size=10000"))
    assert result.error_code == "timeout"
    assert result.error == "Timed out: the page took longer than 2 s."


def test_setting_the_stop_event_abandons_a_fetch_in_flight(site):
    stop = threading.Event()
    with Fetcher(allow_private=True, timeout=60, stop=stop) as fetcher:
        thread_result = {}
        thread = threading.Thread(
            target=lambda: thread_result.setdefault("r", fetcher.fetch(f"{site.url}/trickle?rate=9"))
        )
        thread.start()
        while not site.trickling and thread.is_alive():
            time.sleep(0.05)
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the fetch went on after stop was set"
    assert thread_result["r"].error_code == "cancelled"
