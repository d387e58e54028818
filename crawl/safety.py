"""Refuse to crawl into private networks (server-side request forgery).

A crawl URL comes from users, and every link on a crawled page is attacker-controlled. Without
this check, ``http://169.254.169.254/`` (cloud metadata), ``http://localhost:5432/`` or any
intranet host would be fetched and its contents ingested into a searchable knowledge base.

Two checks, both governed by ``CRAWL_ALLOW_PRIVATE_ADDRESSES``:

- :func:`check_url_safety` before a request (clear error messages, used for input validation and
  for every redirect target);
- :class:`GuardedNetworkBackend` at connect time: it resolves the host itself, vets *every*
  address and connects to a vetted address. This closes the DNS-rebinding gap, where a name
  resolves to a public address during the check and to 127.0.0.1 a moment later.

A host is refused if any of its addresses is non-public: a round-robin name mixing a public and
a private address is a classic way around checks that look at the first answer only.
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from collections.abc import Callable
from urllib.parse import urlsplit

import httpcore
from httpcore._backends.sync import SyncBackend, SyncStream

from crawl.conf import crawl_setting

Resolver = Callable[..., list]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURL(ValueError):
    """The URL must not be fetched; the message says why (shown to users and on CrawlPage)."""


def address_refusal(ip: IPAddress) -> str | None:
    """Why an address is not a public unicast address, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for attribute, label in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(ip, attribute):
            return label
    # Catches what the flags above miss, e.g. 100.64.0.0/10 (carrier-grade NAT) and 6to4 /
    # Teredo wrappers of private space.
    if not ip.is_global:
        return "non-public"
    return None


def allow_private_default() -> bool:
    return bool(crawl_setting("CRAWL_ALLOW_PRIVATE_ADDRESSES"))


def resolve_host(host: str, port: int, *, resolver: Resolver = socket.getaddrinfo) -> list[IPAddress]:
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnsafeURL(f"The host {host} does not resolve ({exc}).") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        text = info[4][0].split("%", 1)[0]  # drop an IPv6 zone id
        ip = ipaddress.ip_address(text)
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnsafeURL(f"The host {host} does not resolve.")
    return addresses


def vet_host(
    host: str, port: int, *, allow_private: bool | None = None, resolver: Resolver = socket.getaddrinfo
) -> list[IPAddress]:
    """Resolve a host and return its addresses, or raise UnsafeURL."""
    if allow_private is None:
        allow_private = allow_private_default()
    addresses = resolve_host(host, port, resolver=resolver)
    if not allow_private:
        for ip in addresses:
            reason = address_refusal(ip)
            if reason:
                raise UnsafeURL(
                    f"The host {host} resolves to the {reason} address {ip}; crawling private networks is "
                    "disabled (set CRAWL_ALLOW_PRIVATE_ADDRESSES=true to allow it)."
                )
    return addresses


def check_url_safety(
    url: str, *, allow_private: bool | None = None, resolver: Resolver = socket.getaddrinfo
) -> list[IPAddress]:
    """Raise UnsafeURL unless ``url`` is http(s) and its host resolves to allowed addresses."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"The URL {url!r} is malformed.") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"The scheme {parts.scheme or '(none)'!r} is not allowed; only http and https are.")
    host = parts.hostname
    if not host:
        raise UnsafeURL("The URL has no host.")
    return vet_host(host, port or (443 if parts.scheme == "https" else 80), allow_private=allow_private, resolver=resolver)


class GuardedNetworkBackend(SyncBackend):
    """httpcore backend that connects only to vetted addresses (see the module docstring).

    TLS still verifies the certificate against the host name: httpcore passes the origin's
    host as ``server_hostname`` to ``start_tls``, independently of the address connected to.
    """

    def __init__(self, *, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> None:
        self.allow_private = allow_private
        self.resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = vet_host(host, port, allow_private=self.allow_private, resolver=self.resolver)
        source = None if local_address is None else (local_address, 0)
        last_error: OSError | None = None
        for ip in addresses:
            try:
                sock = socket.create_connection((str(ip), port), timeout, source_address=source)
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(str(exc)) from exc
            except OSError as exc:
                last_error = exc
                continue
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return SyncStream(sock)
        raise httpcore.ConnectError(str(last_error or f"could not connect to {host}:{port}"))
