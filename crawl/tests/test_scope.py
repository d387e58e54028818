from __future__ import annotations

import pytest

from crawl.scope import InvalidPattern, Scope


def test_only_the_start_host_is_in_scope_by_default():
    scope = Scope.build(start_url="http://127.0.0.1:8000/docs/")
    assert scope.allows("http://127.0.0.1:8000/other")
    assert scope.allows("https://127.0.0.1:8000/other")  # same host, other scheme
    assert not scope.allows("http://localhost:8000/docs/")
    assert not scope.allows("http://127.0.0.1:9000/docs/")
    assert "outside the crawl scope" in scope.refusal("http://example.com/")


def test_allowed_hosts_add_hosts_by_glob():
    scope = Scope.build(start_url="https://example.com/", allowed_hosts=["*.example.com", "localhost:*", "https://cdn.net/"])
    assert scope.allows("https://docs.example.com/x")
    assert scope.allows("http://localhost:1234/")
    assert scope.allows("https://cdn.net/a")
    assert not scope.allows("https://docs.example.com:8443/x")
    assert not scope.allows("https://example.org/")


def test_path_prefix_only_keeps_the_crawl_below_the_start_directory():
    scope = Scope.build(start_url="https://h/docs/guide/intro.html", path_prefix_only=True)
    assert scope.path_prefix == "/docs/guide/"
    assert scope.allows("https://h/docs/guide/setup.html")
    assert not scope.allows("https://h/docs/api/")
    no_dot = Scope.build(start_url="https://h/docs", path_prefix_only=True)
    assert no_dot.allows("https://h/docs")
    assert no_dot.allows("https://h/docs/x")
    assert not no_dot.allows("https://h/docsx")


def test_exclude_wins_over_include():
    scope = Scope.build(start_url="https://h/", include=["/docs/*"], exclude=["/docs/old/*"])
    assert scope.allows("https://h/docs/new.html")
    assert not scope.allows("https://h/docs/old/x.html")
    assert scope.refusal("https://h/blog/") == "matches no include pattern"


def test_the_start_url_is_exempt_from_include_patterns_but_not_exclude():
    scope = Scope.build(start_url="https://h/docs/", include=["/docs/api/*"])
    assert scope.allows("https://h/docs/")
    assert not Scope.build(start_url="https://h/docs/", exclude=["/docs/*"]).allows("https://h/docs/")


def test_patterns_match_path_full_url_or_regex():
    scope = Scope.build(start_url="https://h/", exclude=["*.pdf", "*?print=*", "re:/v[0-9]+/", "/scratch/*"])
    assert not scope.allows("https://h/files/a.pdf")
    assert not scope.allows("https://h/page?print=1")
    assert not scope.allows("https://h/api/v2/x")
    assert not scope.allows("https://h/scratch/a")
    assert scope.allows("https://h/api/latest/x")
    assert scope.allows("https://h/a/scratch/b")  # path globs are anchored at the start of the path


def test_depth_beyond_the_maximum_is_out_of_scope():
    scope = Scope.build(start_url="https://h/", max_depth=2)
    assert scope.allows("https://h/a", depth=2)
    assert "max depth" in scope.refusal("https://h/a", depth=3)


def test_an_invalid_regex_is_reported_with_the_pattern():
    with pytest.raises(InvalidPattern, match=r"\[unclosed"):
        Scope.build(start_url="https://h/", include=["re:[unclosed"])
