from __future__ import annotations

import pytest

from crawl.urls_canon import InvalidURL, canonicalize_url, resolve_link, url_host_key


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("HTTP://Example.COM", "http://example.com/"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("http://example.com./a", "http://example.com/a"),
        ("http://example.com/a#section", "http://example.com/a"),
        ("http://example.com/a/./b/../c", "http://example.com/a/c"),
        ("http://example.com/a/b/..", "http://example.com/a/"),
        ("http://example.com/%7euser/%2f", "http://example.com/~user/%2F"),
        ("http://example.com/a b/ä", "http://example.com/a%20b/%C3%A4"),
        ("http://example.com/100%", "http://example.com/100%25"),
        ("http://example.com/?", "http://example.com/"),
        ("http://example.com/?b=2&a=1&a=0", "http://example.com/?a=0&a=1&b=2"),
        ("http://bücher.de/", "http://xn--bcher-kva.de/"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("  http://example.com/\n", "http://example.com/"),
    ],
)
def test_it_canonicalises_urls(raw, canonical):
    assert canonicalize_url(raw, tracking_params=[]) == canonical


def test_it_removes_tracking_parameters_from_the_setting(settings):
    settings.CRAWL_TRACKING_PARAMS = ["utm_*", "fbclid"]
    url = "https://example.com/p?utm_source=news&UTM_Medium=mail&fbclid=abc&id=7&gclid=x"
    assert canonicalize_url(url) == "https://example.com/p?gclid=x&id=7"


def test_default_tracking_parameters_cover_common_click_ids():
    url = "https://example.com/p?id=1&gclid=a&fbclid=b&msclkid=c&utm_campaign=d&mc_eid=e"
    assert canonicalize_url(url) == "https://example.com/p?id=1"


def test_query_values_keep_their_encoding():
    assert canonicalize_url("http://h/?a=1%262&b=x+y", tracking_params=[]) == "http://h/?a=1%262&b=x+y"
    assert canonicalize_url("http://h/?a=1&2", tracking_params=[]) == "http://h/?2&a=1"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("example.com/page", "no scheme"),
        ("ftp://example.com/", "not supported"),
        ("javascript:alert(1)", "not supported"),
        ("http://", "no host"),
        ("http://example.com:99999/", "invalid port"),
        ("", "empty"),
    ],
)
def test_it_rejects_urls_that_cannot_be_crawled(raw, message):
    with pytest.raises(InvalidURL, match=message):
        canonicalize_url(raw)


def test_relative_links_resolve_against_the_page():
    base = "http://h/docs/guide/intro.html"
    assert resolve_link("setup.html", base) == "http://h/docs/guide/setup.html"
    assert resolve_link("../api/", base) == "http://h/docs/api/"
    assert resolve_link("/top?utm_source=x#frag", base) == "http://h/top"
    assert resolve_link("//other.org/x", "https://h/") == "https://other.org/x"
    assert resolve_link("?page=2", base) == "http://h/docs/guide/intro.html?page=2"


@pytest.mark.parametrize(
    "href",
    ["mailto:a@b.c", "javascript:void(0)", "JavaScript:x", "tel:123", "#top", "", "data:text/html,x", "ftp://h/f"],
)
def test_non_page_links_resolve_to_nothing(href):
    assert resolve_link(href, "http://h/") is None


def test_host_key_keeps_non_default_ports_only():
    assert url_host_key(canonicalize_url("http://H:80/")) == "h"
    assert url_host_key(canonicalize_url("http://h:8000/")) == "h:8000"
