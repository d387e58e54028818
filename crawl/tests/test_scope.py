from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crawl.scope import InvalidPattern, Scope

ROOT = Path(__file__).resolve().parents[2]


def test_only_the_start_host_is_in_scope_by_default():
    scope = Scope.build(start_url="http://127.0.0.1:8000/docs/")
    assert scope.allows("http://127.0.0.1:8000/other")
    assert scope.allows("https://127.0.0.1:8000/other")  # same host, other scheme
    assert not scope.allows("http://localhost:8000/docs/")
    assert not scope.allows("http://127.0.0.1:9000/docs/")
    assert "outside the crawl scope" in scope.refusal("http://example.com/")


def test_allowed_hosts_add_hosts_by_glob():
    scope = Scope.build(
        start_url="https://example.com/", allowed_hosts=["*.example.com", "localhost:*", "https://cdn.net/"]
    )
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


# Python's re needs ~2**n steps for this pattern on n "a"s followed by a non-match.
CATASTROPHIC = "re:(a+)+$"


def test_a_catastrophic_regex_on_a_long_url_is_matched_in_linear_time():
    # In a child process, so that a backtracking engine (which holds the GIL and ignores
    # signals inside the match) cannot hang the test run: it is killed at the timeout.
    script = (
        "from crawl.scope import Pattern\n"
        f"pattern = Pattern.parse({CATASTROPHIC!r})\n"
        "print(pattern.matches('https://h/' + 'a' * 50000 + '!'))\n"
        "print(pattern.matches('https://h/x/' + 'a' * 50000))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("matching one URL against the pattern did not finish within 60 s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False", "True"]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"re:(a)\1", "backreferences"),
        ("re:/docs/(?=v2)", "lookaround"),
        ("re:(?<!x)y", "lookaround"),
        ("re:((a{100}){100}){100}", "repetition"),
        ("re:" + "x" * 600, "at most 500 characters"),
        ("/" + "*" * 600, "at most 500 characters"),
    ],
)
def test_patterns_the_linear_engine_cannot_run_are_refused_with_the_reason(pattern, reason):
    with pytest.raises(InvalidPattern, match=reason):
        Scope.build(start_url="https://h/", exclude=[pattern])


def test_regex_patterns_keep_their_usual_meaning():
    scope = Scope.build(start_url="https://h/", exclude=[r"re:(?i)/ARCHIVE/\d{4}/", r"re:\.pdf$", "re:^https://h/tmp"])
    assert not scope.allows("https://h/archive/2021/x.html")
    assert not scope.allows("https://h/files/a.pdf")
    assert not scope.allows("https://h/tmp/x")
    assert scope.allows("https://h/files/a.pdf.html")
    assert scope.allows("https://h/x/https://h/tmp")
