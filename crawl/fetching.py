"""Fetch one page politely and defensively, and pull the links out of HTML.

``Fetcher.fetch`` never raises for anything the remote side does: hangs, 5xx, redirect loops,
oversized bodies, unsupported content types and unsafe targets all come back as a
``FetchResult`` with ``error`` (a sentence for people) and ``error_code`` (for code) set, so a
crawl records the reason on the page and goes on.

Limits (settings read when the fetcher is built):

- ``CRAWL_TIMEOUT`` seconds for connecting and for each wait for data; the whole response
  (redirects included) must arrive within ``TOTAL_TIMEOUT_FACTOR`` times that, so a server
  trickling one byte a second cannot hold a worker forever. The deadline is enforced inside
  every socket read (``ragsite.outbound.read_limits``), not between body chunks, and so is the
  fetcher's ``stop`` event: a cancelled crawl abandons its requests in flight at once;
- ``CRAWL_MAX_PAGE_BYTES`` of decoded body, however many ``Content-Encoding`` layers it has:
  reading stops there and the page fails as too large (``ragsite.outbound.iter_decoded``); a
  Content-Length above the cap fails before reading;
- ``CRAWL_MAX_REDIRECTS`` redirects, followed by hand so every target is re-checked for safety
  (private addresses) and, through ``redirect_check``, for scope and robots rules.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message

import httpx
import lxml.etree
import lxml.html
from django.conf import settings

from crawl.safety import Resolver, UnsafeURL, allow_private_default, check_url_safety
from crawl.urls_canon import InvalidURL, canonicalize_url, resolve_link, tracking_params_default
from documents.parsers import ACCEPTED_TYPES, UnreadableContent, html_tree
from documents.parsers import sniff_content_type as parsing_sniff
from ragsite.outbound import (
    ACCEPT_ENCODING,
    TOTAL_TIMEOUT_FACTOR,
    ContentDecodingError,
    guarded_transport,
    iter_decoded,
    read_limits,
)

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Everything documents.parsers reads: HTML pages, text, PDF, Office/e-book files, images (OCR).
PAGE_TYPES = HTML_TYPES | ACCEPTED_TYPES
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass
class FetchResult:
    url: str
    final_url: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""
    content_type: str = ""
    charset: str = ""
    etag: str = ""
    last_modified: str = ""
    error: str = ""
    # timeout | connection | too_large | unsupported_type | http_status | too_many_redirects |
    # redirect_loop | bad_redirect | unsafe | out_of_scope | invalid_url | decoding | cancelled
    error_code: str = ""
    redirects: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.status is not None and 200 <= self.status < 300

    @property
    def not_modified(self) -> bool:
        return not self.error and self.status == 304

    @property
    def gone(self) -> bool:
        return self.status in (404, 410)

    @property
    def is_html(self) -> bool:
        return self.content_type in HTML_TYPES


def parse_content_type(value: str) -> tuple[str, str]:
    """``text/html; charset=UTF-8`` -> (``text/html``, ``utf-8``)."""
    if not value:
        return "", ""
    message = Message()
    message["content-type"] = value
    mime = message.get_content_type().lower() if "/" in value.split(";", 1)[0] else ""
    charset = (message.get_param("charset") or "") if mime else ""
    return mime, str(charset).strip().lower()


def sniff_content_type(head: bytes) -> str:
    """What the body itself is (documents.parsers decides, for uploads and ``ingest`` too)."""
    return parsing_sniff(head)


class Fetcher:
    """One HTTP client for a crawl; safe to share between threads.

    Setting ``stop`` (the crawl's cancel event) makes fetches in flight fail at once with
    ``error_code="cancelled"``.
    """

    def __init__(
        self,
        *,
        user_agent: str | None = None,
        timeout: float | None = None,
        max_bytes: int | None = None,
        max_redirects: int | None = None,
        allow_private: bool | None = None,
        allowed_types: Iterable[str] | None = PAGE_TYPES,
        resolver: Resolver = socket.getaddrinfo,
        max_connections: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.user_agent = user_agent or settings.CRAWL_USER_AGENT
        self.timeout = float(timeout if timeout is not None else settings.CRAWL_TIMEOUT)
        self.max_bytes = int(max_bytes if max_bytes is not None else settings.CRAWL_MAX_PAGE_BYTES)
        self.max_redirects = int(max_redirects if max_redirects is not None else settings.CRAWL_MAX_REDIRECTS)
        self.allow_private = allow_private_default() if allow_private is None else allow_private
        self.allowed_types = frozenset(allowed_types) if allowed_types is not None else None
        self.resolver = resolver
        self.stop = stop
        connections = max_connections or max(10, int(settings.CRAWL_CONCURRENCY) * 2)
        self.client = httpx.Client(
            transport=guarded_transport(
                allow_private=self.allow_private, resolver=resolver, max_connections=connections
            ),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            trust_env=False,
            headers={
                "User-Agent": self.user_agent,
                "Accept": "text/html,application/xhtml+xml,text/markdown;q=0.9,text/plain;q=0.8,application/pdf;q=0.8,*/*;q=0.1",
                # Only what iter_decoded can undo within the cap (httpx would add br or zstd
                # when their packages happen to be installed).
                "Accept-Encoding": ACCEPT_ENCODING,
            },
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fetch(
        self,
        url: str,
        *,
        etag: str = "",
        last_modified: str = "",
        redirect_check: Callable[[str], str | None] | None = None,
        allowed_types: Iterable[str] | bool | None = True,
        max_bytes: int | None = None,
        truncate: bool = False,
    ) -> FetchResult:
        """Fetch ``url``; ``redirect_check(target)`` returns a refusal reason or None.

        ``allowed_types=True`` uses the fetcher's list, ``None`` accepts any content type.
        ``truncate=True`` keeps the first ``max_bytes`` of a longer body instead of failing
        (robots.txt: RFC 9309 asks to parse at least the first 500 KiB).
        """
        types = (
            self.allowed_types
            if allowed_types is True
            else (None if allowed_types is None else frozenset(allowed_types))
        )
        cap = self.max_bytes if max_bytes is None else max_bytes
        result = FetchResult(url=url, final_url=url)
        deadline = time.monotonic() + self.timeout * TOTAL_TIMEOUT_FACTOR
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        seen = {url}
        try:
            with read_limits(deadline=deadline, stop=self.stop):
                return self._follow(
                    result, headers, seen, redirect_check, types=types, cap=cap, deadline=deadline, truncate=truncate
                )
        except UnsafeURL as exc:
            return _fail(result, "unsafe", str(exc))
        except httpx.TimeoutException:
            if time.monotonic() >= deadline:
                return _fail(
                    result,
                    "timeout",
                    f"Timed out: the page took longer than {self.timeout * TOTAL_TIMEOUT_FACTOR:g} s.",
                )
            return _fail(result, "timeout", f"Timed out (no response within {self.timeout:g} s).")
        except httpx.DecodingError as exc:
            return _fail(result, "decoding", f"The response could not be decoded: {exc}.")
        except httpx.InvalidURL as exc:
            return _fail(result, "invalid_url", f"Invalid URL: {exc}.")
        except httpx.TransportError as exc:
            if self.stop is not None and self.stop.is_set():
                return _fail(result, "cancelled", "The crawl was cancelled while this page was being fetched.")
            return _fail(result, "connection", f"Connection failed: {exc or type(exc).__name__}.")

    def _follow(
        self,
        result: FetchResult,
        headers: dict[str, str],
        seen: set[str],
        redirect_check: Callable[[str], str | None] | None,
        *,
        types: frozenset[str] | None,
        cap: int,
        deadline: float,
        truncate: bool,
    ) -> FetchResult:
        current = result.url
        for hop in range(self.max_redirects + 1):
            result.final_url = current
            if hop:
                reason = redirect_check(current) if redirect_check else None
                if reason:
                    return _fail(result, "out_of_scope", f"Redirected to {current}, which is refused: {reason}.")
            check_url_safety(current, allow_private=self.allow_private, resolver=self.resolver)
            with self.client.stream("GET", current, headers=headers) as response:
                result.status = response.status_code
                result.headers = {k.lower(): v for k, v in response.headers.items()}
                if response.status_code in REDIRECT_STATUSES and "location" in response.headers:
                    target = resolve_link(response.headers["location"], current, tracking_params=())
                    if target is None:
                        return _fail(
                            result,
                            "bad_redirect",
                            f"Redirect to an unsupported location: {response.headers['location']!r}.",
                        )
                    if target in seen:
                        return _fail(result, "redirect_loop", f"Redirect loop: {target} was already visited.")
                    seen.add(target)
                    result.redirects.append(target)
                    current = target
                    continue
                return self._read(response, result, types=types, cap=cap, deadline=deadline, truncate=truncate)
        return _fail(result, "too_many_redirects", f"More than {self.max_redirects} redirects.")

    def _read(
        self,
        response: httpx.Response,
        result: FetchResult,
        *,
        types: frozenset[str] | None,
        cap: int,
        deadline: float,
        truncate: bool,
    ) -> FetchResult:
        result.etag = response.headers.get("etag", "")
        result.last_modified = response.headers.get("last-modified", "")
        status = response.status_code
        if status == 304:
            return result
        if status >= 400:
            return _fail(result, "http_status", f"HTTP {status} {response.reason_phrase}".rstrip() + ".")
        if not 200 <= status < 300:
            return _fail(result, "http_status", f"Unexpected HTTP status {status}.")
        mime, charset = parse_content_type(response.headers.get("content-type", ""))
        result.content_type, result.charset = mime, charset
        sniff = mime in ("", "application/octet-stream", "binary/octet-stream")
        if types is not None and not sniff and mime not in types:
            return _fail(result, "unsupported_type", f"Unsupported content type {mime}.")
        declared = response.headers.get("content-length", "")
        if not truncate and declared.isdigit() and int(declared) > cap and "content-encoding" not in response.headers:
            return _fail(result, "too_large", f"Too large: {int(declared)} bytes, the limit is {cap}.")
        body = bytearray()
        try:
            for chunk in iter_decoded(response.iter_raw(), response.headers.get("content-encoding", "")):
                body += chunk
                if len(body) > cap:
                    if truncate:
                        del body[cap:]
                        break
                    return _fail(result, "too_large", f"Too large: more than {cap} bytes once decoded.")
                if time.monotonic() > deadline:
                    return _fail(
                        result,
                        "timeout",
                        f"Timed out: the page took longer than {self.timeout * TOTAL_TIMEOUT_FACTOR:g} s.",
                    )
        except ContentDecodingError as exc:
            return _fail(result, "decoding", str(exc))
        result.content = bytes(body)
        sniffed = sniff_content_type(result.content)
        # The content wins over the label when it is unambiguous (a PDF served as text/html, a
        # zip served as a PDF), so links are not looked for in a PDF and a zip is not ingested.
        if sniff or (sniffed and sniffed != "text/html"):
            result.content_type = sniffed or mime
            if types is not None and result.content_type not in types:
                result.content = b""
                shown = (
                    f"{mime or '(none)'}, but the content is {sniffed}"
                    if sniffed and sniffed != mime
                    else mime or "(none)"
                )
                return _fail(result, "unsupported_type", f"Unsupported content type {shown}.")
        return result


def _fail(result: FetchResult, code: str, message: str) -> FetchResult:
    result.error_code = code
    result.error = message
    return result


@dataclass
class PageLinks:
    links: list[str]
    noindex: bool = False
    nofollow: bool = False


def _robots_tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.replace(";", ",").split(",") if token.strip()}


def parse_links(
    content: bytes | str,
    base_url: str,
    *,
    respect_nofollow: bool = True,
    tracking_params: Iterable[str] | None = None,
) -> PageLinks:
    """Links of an HTML page (canonical, in document order, de-duplicated) and its robots meta.

    ``<base href>`` is honoured; ``mailto:``, ``javascript:`` and other non-web links are
    skipped; with ``respect_nofollow`` links marked ``rel="nofollow"`` are skipped and a page
    with ``<meta name="robots" content="nofollow">`` yields no links.
    """
    if not content or not content.strip():
        return PageLinks(links=[])
    try:
        # Not cut silently at libxml2's depth limit, which would lose every later link.
        root, _ = html_tree(content)
    except (lxml.etree.ParserError, ValueError, UnreadableContent):
        return PageLinks(links=[])
    meta = PageLinks(links=[])
    for element in root.iter("meta"):
        if (element.get("name") or "").strip().lower() in ("robots", "ragsite"):
            tokens = _robots_tokens(element.get("content") or "")
            meta.noindex |= bool(tokens & {"noindex", "none"})
            meta.nofollow |= bool(tokens & {"nofollow", "none"})
    base = base_url
    for element in root.iter("base"):
        href = element.get("href")
        if href:
            resolved = resolve_link(href, base_url, tracking_params=())
            if resolved:
                base = resolved
            break
    if respect_nofollow and meta.nofollow:
        return meta
    if tracking_params is None:
        tracking_params = tracking_params_default()
    seen: set[str] = set()
    # Documentation pages repeat the same targets hundreds of times with different fragments
    # ("intro.html#availability"); the fragment never changes where a link leads, so each
    # target is resolved once per page instead of once per anchor.
    resolved: dict[str, str | None] = {}
    for element in root.iter("a", "area"):
        href = element.get("href")
        if not href:
            continue
        if respect_nofollow and "nofollow" in (element.get("rel") or "").lower().split():
            continue
        target = href.strip().partition("#")[0]
        if target and target in resolved:
            link = resolved[target]
        else:
            link = resolve_link(href, base, tracking_params=tracking_params)
            if target:
                resolved[target] = link
        if link and link not in seen:
            seen.add(link)
            meta.links.append(link)
    return meta


def extract_links(
    content: bytes | str, base_url: str, *, respect_nofollow: bool = True, tracking_params: Iterable[str] | None = None
) -> list[str]:
    return parse_links(content, base_url, respect_nofollow=respect_nofollow, tracking_params=tracking_params).links


def x_robots_directives(headers: dict[str, str]) -> set[str]:
    """Tokens of an ``X-Robots-Tag`` header that applies to every crawler (no ``bot:`` prefix)."""
    value = headers.get("x-robots-tag", "")
    tokens: set[str] = set()
    for part in value.split(","):
        part = part.strip().lower()
        if ":" in part and part.split(":", 1)[0].strip() not in ("noindex", "nofollow", "none"):
            continue  # addressed to a named crawler
        if part:
            tokens.add(part)
    return tokens


def canonical_or_none(url: str) -> str | None:
    try:
        return canonicalize_url(url)
    except InvalidURL:
        return None
