from __future__ import annotations

import gzip

import pytest

from crawl.fetching import Fetcher
from crawl.sitemaps import SitemapError, parse_sitemap, sitemap_candidates, sitemap_collect

URLSET = b"""<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc> https://h/a </loc><lastmod>2024-05-01</lastmod></url>
  <url><loc>https://h/b#frag</loc></url>
</urlset>"""


@pytest.fixture
def fetcher():
    with Fetcher(allow_private=True, timeout=1) as f:
        yield f


def test_a_urlset_lists_pages():
    parsed = parse_sitemap(URLSET)
    assert parsed.kind == "urlset"
    assert [(e.url, e.lastmod) for e in parsed.entries] == [("https://h/a", "2024-05-01"), ("https://h/b#frag", "")]


def test_gzip_sitemaps_are_decompressed():
    assert parse_sitemap(gzip.compress(URLSET)).kind == "urlset"


def test_a_gzip_bomb_stops_at_the_size_limit():
    bomb = gzip.compress(b"<urlset>" + b" " * 5_000_000 + b"</urlset>")
    with pytest.raises(SitemapError, match="Too large"):
        parse_sitemap(bomb, max_bytes=1_000_000)


def test_plain_text_sitemaps_are_supported():
    parsed = parse_sitemap(b"https://h/a\n\nhttps://h/b\nnot a url\n")
    assert [e.url for e in parsed.entries] == ["https://h/a", "https://h/b"]


def test_entities_are_never_expanded():
    xxe = b"""<?xml version="1.0"?>
<!DOCTYPE urlset [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
<urlset><url><loc>https://h/&secret;</loc></url></urlset>"""
    entries = parse_sitemap(xxe).entries
    hostname = open("/etc/hostname").read().strip()
    assert all(hostname not in e.url for e in entries)

    laughs = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<urlset><url><loc>https://h/&lol3;</loc></url></urlset>"""
    assert all(len(e.url) < 100 for e in parse_sitemap(laughs).entries)


def test_other_xml_is_not_a_sitemap():
    with pytest.raises(SitemapError, match="Not a sitemap"):
        parse_sitemap(b"<html><body>hi</body></html>")


def test_candidates_prefer_robots_sitemaps():
    assert sitemap_candidates("http://h/docs/", ["http://h/s1.xml", "http://h/s1.xml#x"]) == ["http://h/s1.xml"]
    assert sitemap_candidates("http://h:8000/docs/") == ["http://h:8000/sitemap.xml"]


def test_the_site_sitemap_is_collected_in_scope(site, fetcher):
    result = sitemap_collect(fetcher, [f"{site.url}/sitemap.xml"], entry_allowed=lambda url: "/private/" not in url)
    assert [e.url for e in result.entries] == [
        f"{site.url}/index.html",
        f"{site.url}/docs/index.html",
        f"{site.url}/docs/a.html",
        f"{site.url}/orphan.html",
    ]
    assert result.errors == {}


def test_sitemap_indexes_and_gzip_children_are_followed(site, fetcher):
    child = f"<urlset><url><loc>{site.url}/docs/b.html</loc></url></urlset>".encode()
    site.overrides["/child.xml.gz"] = (200, {"Content-Type": "application/gzip"}, gzip.compress(child))
    index = (
        f"<sitemapindex xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'>"
        f"<sitemap><loc>{site.url}/child.xml.gz</loc></sitemap>"
        f"<sitemap><loc>{site.url}/sitemap.xml</loc></sitemap>"
        f"<sitemap><loc>{site.url}/missing.xml</loc></sitemap>"
        f"<sitemap><loc>{site.other_host_url}/elsewhere.xml</loc></sitemap>"
        f"<sitemap><loc>{site.url}/index.xml</loc></sitemap>"  # itself: not read twice
        "</sitemapindex>"
    ).encode()
    site.overrides["/index.xml"] = (200, {"Content-Type": "application/xml"}, index)
    result = sitemap_collect(fetcher, [f"{site.url}/index.xml"], fetch_allowed=lambda url: url.startswith(site.url))
    urls = [e.url for e in result.entries]
    assert urls[0] == f"{site.url}/docs/b.html"
    assert f"{site.url}/orphan.html" in urls
    assert result.errors[f"{site.url}/missing.xml"] == "HTTP 404 Not Found."
    assert result.errors[f"{site.other_host_url}/elsewhere.xml"] == "outside the crawl scope"
    assert site.count("/index.xml") == 1


def test_collection_is_bounded(site, fetcher):
    result = sitemap_collect(fetcher, [f"{site.url}/sitemap.xml"], max_urls=2)
    assert len(result.entries) == 2
    assert result.truncated
    many = [f"{site.url}/s{i}.xml" for i in range(5)]
    result = sitemap_collect(fetcher, many, max_sitemaps=3)
    assert len(result.sitemaps_read) == 3
    assert result.truncated
