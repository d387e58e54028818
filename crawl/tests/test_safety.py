from __future__ import annotations

import socket

import pytest

from crawl.fetching import Fetcher
from crawl.safety import UnsafeURL, check_url_safety


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://localhost:8000/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.10/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://100.64.0.1/", "non-public"),
    ],
)
def test_private_addresses_are_refused_unless_allowed(url, kind):
    with pytest.raises(UnsafeURL, match=f"the {kind} address .*CRAWL_ALLOW_PRIVATE_ADDRESSES"):
        check_url_safety(url, allow_private=False)
    assert check_url_safety(url, allow_private=True)


def test_public_addresses_pass():
    assert [str(ip) for ip in check_url_safety("http://93.184.215.14/", allow_private=False)] == ["93.184.215.14"]


def test_the_setting_decides_by_default(settings):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(UnsafeURL):
        check_url_safety("http://127.0.0.1/")
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = True
    check_url_safety("http://127.0.0.1/")


@pytest.mark.parametrize("url", ["ftp://93.184.215.14/", "file:///etc/passwd", "gopher://h/"])
def test_only_http_and_https_are_allowed(url):
    with pytest.raises(UnsafeURL, match="only http and https"):
        check_url_safety(url, allow_private=True)


def test_a_host_with_any_private_address_is_refused():
    def round_robin(host, port, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    with pytest.raises(UnsafeURL, match=r"10\.0\.0\.5"):
        check_url_safety("http://mixed.example/", allow_private=False, resolver=round_robin)


def test_an_unresolvable_host_is_refused():
    with pytest.raises(UnsafeURL, match="does not resolve"):
        check_url_safety("http://no-such-host.invalid/", allow_private=True)


def test_the_connection_itself_is_vetted_against_dns_rebinding(site):
    # The name resolves to a public address when checked, then to 127.0.0.1 when connecting:
    # the connect-time check must catch it, or a rebinding DNS server reaches internal services.
    answers = iter(["93.184.215.14"])

    def rebinding(host, port, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers, "127.0.0.1"), port))]

    with Fetcher(allow_private=False, resolver=rebinding) as fetcher:
        result = fetcher.fetch(f"http://rebind.example:{site.port}/index.html")
    assert result.error_code == "unsafe"
    assert "loopback address 127.0.0.1" in result.error
    assert site.paths() == []


def test_the_fetcher_refuses_a_private_start_url(site):
    with Fetcher(allow_private=False) as fetcher:
        result = fetcher.fetch(f"{site.url}/index.html")
    assert result.error_code == "unsafe"
    assert site.paths() == []
