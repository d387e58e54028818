from __future__ import annotations

import tracemalloc

import pytest

from crawl.fetching import Fetcher
from crawl.robots import RobotsCache, product_token
from crawl.tests.site import layered_gzip


@pytest.fixture
def fetcher():
    with Fetcher(allow_private=True, timeout=0.5) as f:
        yield f


def robots(site, fetcher, **options) -> RobotsCache:
    options.setdefault("user_agent", "ragsite-crawler/1.0 (+https://github.com/ragsite)")
    options.setdefault("default_delay", 0.25)
    return RobotsCache(fetcher, **options)


def test_disallowed_paths_are_refused(site, fetcher):
    cache = robots(site, fetcher)
    assert cache.allowed(f"{site.url}/docs/a.html")
    assert cache.refusal(f"{site.url}/private/secret.html") == "disallowed by robots.txt"


def test_robots_txt_is_fetched_once_per_origin(site, fetcher):
    cache = robots(site, fetcher)
    for path in ("/a", "/b", "/private/c"):
        cache.allowed(f"{site.url}{path}")
    cache.allowed(f"{site.other_host_url}/a")
    assert site.paths() == ["/robots.txt", "/robots.txt"]


def test_groups_match_our_product_token(site, fetcher):
    site.overrides["/robots.txt"] = (
        200,
        {"Content-Type": "text/plain"},
        b"User-agent: ragsite-crawler\nDisallow: /docs/\nCrawl-delay: 2\n\n"
        b"User-agent: github\nDisallow: /\n\nUser-agent: *\nDisallow: /blog/\n",
    )
    cache = robots(site, fetcher)
    assert not cache.allowed(f"{site.url}/docs/a.html")
    assert cache.allowed(f"{site.url}/blog/post1.html")  # the * group does not apply to us
    assert cache.allowed(f"{site.url}/index.html")  # "github" in our contact URL is not our name
    assert cache.delay(f"{site.url}/") == 2.0


def test_without_crawl_delay_the_default_delay_applies(site, fetcher):
    assert robots(site, fetcher).delay(f"{site.url}/") == 0.25


def test_crawl_delay_is_capped(site, fetcher):
    site.overrides["/robots.txt"] = (200, {}, b"User-agent: *\nCrawl-delay: 3600\n")
    assert robots(site, fetcher, max_delay=30).delay(f"{site.url}/") == 30


def test_request_rate_implies_a_delay(site, fetcher):
    site.overrides["/robots.txt"] = (200, {}, b"User-agent: *\nRequest-rate: 1/5s\n")
    assert robots(site, fetcher).delay(f"{site.url}/") == 5.0


@pytest.mark.parametrize("status", [404, 403, 410])
def test_a_missing_robots_txt_allows_everything(site, fetcher, status):
    site.overrides["/robots.txt"] = (status, {}, b"nope")
    assert robots(site, fetcher).allowed(f"{site.url}/private/secret.html")


@pytest.mark.parametrize("status", [500, 503, 429])
def test_an_unreachable_robots_txt_disallows_everything_for_a_while(site, fetcher, status):
    site.overrides["/robots.txt"] = (status, {}, b"down")
    now = [1000.0]
    cache = robots(site, fetcher, error_ttl=600, clock=lambda: now[0])
    reason = cache.refusal(f"{site.url}/docs/a.html")
    assert f"robots.txt of {site.url} is unreachable (HTTP {status})" in reason

    del site.overrides["/robots.txt"]
    now[0] += 599
    assert not cache.allowed(f"{site.url}/docs/a.html")
    now[0] += 2
    assert cache.allowed(f"{site.url}/docs/a.html")
    assert site.paths() == ["/robots.txt", "/robots.txt"]


def test_a_robots_txt_that_times_out_disallows_everything(site, fetcher):
    site.overrides.clear()
    site.overrides["/robots.txt"] = (302, {"Location": "/slow"}, b"")
    assert "Timed out" in robots(site, fetcher).refusal(f"{site.url}/docs/a.html")


def test_sitemaps_are_read_from_robots_txt(site, fetcher):
    assert robots(site, fetcher).sitemaps(f"{site.url}/") == [f"{site.url}/sitemap.xml"]


def test_the_product_token_is_the_first_word_of_the_user_agent():
    assert product_token("ragsite-crawler/1.0 (+https://x)") == "ragsite-crawler"
    assert product_token("MyBot") == "mybot"
    assert product_token("") == "*"


def test_a_layered_compression_bomb_as_robots_txt_is_read_up_to_its_cap(site, fetcher):
    rules = b"User-agent: *\nDisallow: /private/\n"
    body = layered_gzip(rules, 128 * 1024 * 1024, 3)
    site.overrides["/robots.txt"] = (200, {"Content-Type": "text/plain", "Content-Encoding": "gzip, gzip, gzip"}, body)
    cache = robots(site, fetcher)
    tracemalloc.start()
    try:
        refusal = cache.refusal(f"{site.url}/private/x.html")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refusal == "disallowed by robots.txt"
    assert cache.allowed(f"{site.url}/docs/a.html")
    # robots.txt is read up to 512 KiB; a layer inflated whole would be 128 MiB.
    assert peak < 16 * 1024 * 1024, f"{peak} bytes allocated while reading {len(body)} bytes"
