"""Outbound HTTP to addresses that users and websites choose: guarded, and bounded in time and size.

Shared by the crawler (``crawl.fetching``) and ``manage.py ingest URL`` (``documents``), which
must not import each other; it lives here, below both layers.

**Addresses (server-side request forgery).** A URL given by a user, every link on a crawled
page and every redirect target are attacker-controlled. Without a check,
``http://169.254.169.254/`` (cloud metadata), ``http://localhost:5432/`` or any intranet host
would be fetched and its contents stored in a searchable knowledge base. Two checks, both
governed by ``CRAWL_ALLOW_PRIVATE_ADDRESSES``:

- :func:`check_url_safety` before a request (clear error messages, used for input validation
  and for every redirect target);
- :class:`GuardedNetworkBackend` at connect time: it resolves the host itself, vets *every*
  address and connects to a vetted address. This closes the DNS-rebinding gap, where a name
  resolves to a public address during the check and to 127.0.0.1 a moment later, and it covers
  redirects that a client follows by itself.

A host is refused if any of its addresses is non-public: a round-robin name mixing a public and
a private address is a classic way around checks that look at the first answer only.

**Time.** Inside :func:`read_limits` every socket read of the current thread waits at most
until the deadline, in slices of ``POLL_SECONDS`` between which the stop event is checked: a
server trickling a byte a second cannot outlast the deadline by more than a slice, and a
cancelled crawl stops its requests in flight within a slice. (Reading the body in large chunks
would not do: a 64 KiB chunk at 9 bytes/s takes two hours to fill.)

**Size.** :func:`iter_decoded` undoes ``Content-Encoding`` itself, layer by layer, never
producing more than ``DECODE_CHUNK`` bytes at a time, so the caller's cap applies to the decoded
body and reading stops there. httpx's own decoder inflates each raw chunk completely through
every layer: with ``Content-Encoding: gzip, gzip`` a 7 KB response expands to 4 GiB inside one
call, before any cap can be checked.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
import typing
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
from httpcore._backends.sync import SyncBackend, SyncStream

Resolver = Callable[..., list]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# What clients here announce; anything else a server sends anyway is refused (see iter_decoded).
ACCEPT_ENCODING = "gzip, deflate"
# Real servers apply one encoding, misconfigured proxies sometimes two; each layer costs a
# decompressor (zlib's state and window), and the header is the sender's choice.
MAX_ENCODING_LAYERS = 3
DECODE_CHUNK = 64 * 1024
POLL_SECONDS = 0.25
# A whole response (redirects included) must arrive within this many times the per-read timeout.
TOTAL_TIMEOUT_FACTOR = 4


class UnsafeURL(ValueError):
    """The URL must not be fetched; the message says why (shown to users and on CrawlPage)."""


class ContentDecodingError(ValueError):
    """The body's Content-Encoding is unsupported or corrupt; the message says which."""


class DeadlineExceeded(httpcore.ReadTimeout):
    """The request's total time ran out (httpx surfaces it as ``httpx.ReadTimeout``)."""


class RequestCancelled(httpcore.ReadError):
    """The caller's stop event was set while waiting for data (surfaces as ``httpx.ReadError``)."""


# --- addresses ----------------------------------------------------------------------------------


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
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        return settings.CRAWL_ALLOW_PRIVATE_ADDRESSES
    except ImproperlyConfigured:  # used outside Django (scripts, benches): the safe default
        return False


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
                    f"The host {host} resolves to the {reason} address {ip}; fetching from private networks is "
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
    return vet_host(
        host, port or (443 if parts.scheme == "https" else 80), allow_private=allow_private, resolver=resolver
    )


# --- time -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Limits:
    deadline: float
    stop: threading.Event | None


# Per thread (and per context): httpx's sync client reads on the calling thread, so the limits
# of the request being made reach the socket without passing through httpx.
_limits: ContextVar[_Limits | None] = ContextVar("outbound_read_limits", default=None)


@contextlib.contextmanager
def read_limits(*, deadline: float, stop: threading.Event | None = None) -> Iterator[None]:
    """Bound every socket read on this thread by ``deadline`` (``time.monotonic()``) and ``stop``."""
    token = _limits.set(_Limits(deadline=deadline, stop=stop))
    try:
        yield
    finally:
        _limits.reset(token)


class _BoundedStream(SyncStream):
    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        limits = _limits.get()
        if limits is None:
            return super().read(max_bytes, timeout)
        wait_until = None if timeout is None else time.monotonic() + timeout
        while True:
            if limits.stop is not None and limits.stop.is_set():
                raise RequestCancelled("The request was cancelled.")
            now = time.monotonic()
            if now >= limits.deadline:
                raise DeadlineExceeded("The request ran out of time.")
            if wait_until is not None and now >= wait_until:
                raise httpcore.ReadTimeout("timed out")
            step = min(
                limits.deadline - now, POLL_SECONDS, wait_until - now if wait_until is not None else POLL_SECONDS
            )
            try:
                return super().read(max_bytes, step)
            except httpcore.ReadTimeout:
                continue

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        limits = _limits.get()
        if limits is not None:
            left = max(limits.deadline - time.monotonic(), 0.001)
            timeout = left if timeout is None else min(timeout, left)
        super().write(buffer, timeout)

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        stream = super().start_tls(ssl_context, server_hostname, timeout)
        # Keep the limits on the TLS socket too (the plain stream is replaced by it).
        return _BoundedStream(stream._sock) if type(stream) is SyncStream else stream


class GuardedNetworkBackend(SyncBackend):
    """httpcore backend that connects only to vetted addresses and bounds reads (module docstring).

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
        limits = _limits.get()
        if limits is not None:
            left = limits.deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded("The request ran out of time.")
            timeout = left if timeout is None else min(timeout, left)
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
            return _BoundedStream(sock)
        raise httpcore.ConnectError(str(last_error or f"could not connect to {host}:{port}"))


def guarded_transport(*, allow_private: bool, resolver: Resolver = socket.getaddrinfo, max_connections: int = 10):
    """An httpx transport whose every connection goes through :class:`GuardedNetworkBackend`."""
    import httpx

    transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=max_connections), trust_env=False)
    # httpx has no public hook for the network backend; the pool is fresh (no connections yet),
    # so swapping its backend routes every connect through the address check.
    transport._pool._network_backend = GuardedNetworkBackend(allow_private=allow_private, resolver=resolver)
    return transport


# --- size -----------------------------------------------------------------------------------------


def content_encodings(header: str) -> list[str]:
    """The codings of a Content-Encoding header in the order they were applied ("identity" dropped)."""
    codings = [token.strip().lower() for token in header.split(",") if token.strip()]
    return [coding for coding in codings if coding != "identity"]


def iter_decoded(raw: Iterable[bytes], content_encoding: str) -> Iterator[bytes]:
    """Decode a body given as raw chunks; each step yields at most ``DECODE_CHUNK`` bytes.

    Layers are generators pulling from the one below, so a consumer that stops at its cap stops
    all decompression there. Raises ContentDecodingError for unknown or corrupt encodings.
    """
    codings = content_encodings(content_encoding)
    if len(codings) > MAX_ENCODING_LAYERS:
        raise ContentDecodingError(
            f"The response is encoded {len(codings)} times (Content-Encoding: {content_encoding}); "
            f"at most {MAX_ENCODING_LAYERS} layers are accepted."
        )
    stream: Iterable[bytes] = raw
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            stream = _inflate(stream, gzip=True)
        elif coding == "deflate":
            stream = _inflate(stream, gzip=False)
        else:
            raise ContentDecodingError(f"Unsupported Content-Encoding {coding!r} (accepted: {ACCEPT_ENCODING}).")
    yield from stream


def _inflate(chunks: Iterable[bytes], *, gzip: bool) -> Iterator[bytes]:
    # gzip: header and trailer (wbits 16+); deflate: zlib-wrapped as the RFC says, or raw deflate
    # as some servers send it (tried when the zlib header does not parse, as browsers do).
    wbits = 16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS
    decoder = zlib.decompressobj(wbits)
    started = False
    for data in chunks:
        while data:
            if decoder.eof:
                # Concatenated gzip members are one valid body; anything else after the end
                # of the stream is ignored, as browsers do.
                if not (gzip and data[:2] == b"\x1f\x8b"):
                    return
                decoder = zlib.decompressobj(wbits)
            try:
                out = decoder.decompress(data, DECODE_CHUNK)
            except zlib.error as exc:
                if not gzip and not started:
                    wbits, started = -zlib.MAX_WBITS, True
                    decoder = zlib.decompressobj(wbits)
                    continue
                raise ContentDecodingError(f"The {'gzip' if gzip else 'deflate'} data is corrupt ({exc}).") from exc
            started = True
            data = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
            if out:
                yield out
            # A full output chunk may leave more output inside zlib with no input left.
            while not data and len(out) == DECODE_CHUNK and not decoder.eof:
                out = decoder.decompress(b"", DECODE_CHUNK)
                if out:
                    yield out
