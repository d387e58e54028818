"""Seed a crawl from sitemaps: ``Sitemap:`` lines of robots.txt, else ``/sitemap.xml``.

Handles ``<urlset>`` sitemaps, ``<sitemapindex>`` files (followed breadth-first), gzip-compressed
files (``.xml.gz``, detected by their magic bytes rather than the name or headers) and plain-text
sitemaps (one URL a line).

Bounded, because sitemaps come from the crawled site: at most ``CRAWL_MAX_SITEMAPS`` files, at
most ``CRAWL_MAX_SITEMAP_URLS`` URLs in total, at most ``CRAWL_MAX_SITEMAP_BYTES`` per file after
decompression (the protocol's own limit is 50 MB) — a gzip bomb stops there.

XML is parsed defensively with lxml: no entity expansion (billion laughs), no DTD loading, no
network access (external entities), no huge-tree mode.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import lxml.etree
from django.conf import settings

from crawl.fetching import Fetcher
from crawl.urls_canon import InvalidURL, canonicalize_url, url_origin

GZIP_MAGIC = b"\x1f\x8b"


class SitemapError(ValueError):
    pass


@dataclass
class SitemapEntry:
    url: str
    lastmod: str = ""


@dataclass
class ParsedSitemap:
    kind: str  # urlset | sitemapindex | text
    entries: list[SitemapEntry]


@dataclass
class SitemapResult:
    entries: list[SitemapEntry] = field(default_factory=list)
    sitemaps_read: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    truncated: bool = False


def sitemap_candidates(start_url: str, robots_sitemaps: Iterable[str] = ()) -> list[str]:
    """Sitemaps named by robots.txt, or the conventional ``/sitemap.xml`` when it names none."""
    found: list[str] = []
    for url in robots_sitemaps:
        try:
            canonical = canonicalize_url(url)
        except InvalidURL:
            continue
        if canonical not in found:
            found.append(canonical)
    if not found:
        found.append(f"{url_origin(canonicalize_url(start_url))}/sitemap.xml")
    return found


def decompress_bounded(data: bytes, max_bytes: int) -> bytes:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise SitemapError(f"Corrupt gzip data: {exc}.") from exc
    if len(out) > max_bytes:
        raise SitemapError(f"Too large: more than {max_bytes} bytes once decompressed.")
    return out


def _parser() -> lxml.etree.XMLParser:
    return lxml.etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        recover=True,
    )


def _localname(element: lxml.etree._Element) -> str:
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1].lower()


def _child_text(element: lxml.etree._Element, name: str) -> str:
    for child in element:
        if _localname(child) == name:
            return "".join(child.itertext()).strip()
    return ""


def parse_sitemap(data: bytes, *, max_bytes: int | None = None) -> ParsedSitemap:
    """Parse sitemap bytes (gzip or not); raises SitemapError when they are not a sitemap."""
    cap = int(settings.CRAWL_MAX_SITEMAP_BYTES if max_bytes is None else max_bytes)
    if data.startswith(GZIP_MAGIC):
        data = decompress_bounded(data, cap)
    elif len(data) > cap:
        raise SitemapError(f"Too large: more than {cap} bytes.")
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise SitemapError("Empty sitemap.")
    if not head.startswith(b"<"):
        lines = head.decode("utf-8", errors="replace").splitlines()
        entries = [
            SitemapEntry(url=line.strip()) for line in lines if line.strip().lower().startswith(("http://", "https://"))
        ]
        return ParsedSitemap(kind="text", entries=entries)
    try:
        root = lxml.etree.fromstring(head, parser=_parser())
    except lxml.etree.XMLSyntaxError as exc:
        raise SitemapError(f"Not valid XML: {exc}.") from exc
    if root is None:
        raise SitemapError("Not valid XML.")
    kind = _localname(root)
    if kind not in ("urlset", "sitemapindex"):
        raise SitemapError(f"Not a sitemap (root element <{kind}>).")
    item = "url" if kind == "urlset" else "sitemap"
    entries = []
    for element in root:
        if _localname(element) == item:
            loc = _child_text(element, "loc")
            if loc:
                entries.append(SitemapEntry(url=loc, lastmod=_child_text(element, "lastmod")))
    return ParsedSitemap(kind=kind, entries=entries)


def sitemap_collect(
    fetcher: Fetcher,
    sitemap_urls: Iterable[str],
    *,
    fetch_allowed: Callable[[str], bool] | None = None,
    entry_allowed: Callable[[str], bool] | None = None,
    max_sitemaps: int | None = None,
    max_urls: int | None = None,
    max_bytes: int | None = None,
) -> SitemapResult:
    """Fetch sitemaps (following indexes) and return their page URLs, canonical and de-duplicated.

    ``fetch_allowed`` decides which sitemap files may be fetched (the crawl's hosts),
    ``entry_allowed`` which listed pages are kept (the crawl's scope). Failures are collected in
    ``errors`` by sitemap URL: a broken sitemap never stops a crawl.
    """
    max_sitemaps = int(settings.CRAWL_MAX_SITEMAPS if max_sitemaps is None else max_sitemaps)
    max_urls = int(settings.CRAWL_MAX_SITEMAP_URLS if max_urls is None else max_urls)
    cap = int(settings.CRAWL_MAX_SITEMAP_BYTES if max_bytes is None else max_bytes)
    result = SitemapResult()
    queue = list(sitemap_urls)
    queued = set(queue)
    seen_entries: set[str] = set()
    while queue:
        if len(result.sitemaps_read) >= max_sitemaps:
            result.truncated = True
            break
        url = queue.pop(0)
        if fetch_allowed is not None and not fetch_allowed(url):
            result.errors[url] = "outside the crawl scope"
            continue
        fetched = fetcher.fetch(url, allowed_types=None, max_bytes=cap)
        result.sitemaps_read.append(url)
        if fetched.not_modified or not fetched.ok:
            result.errors[url] = fetched.error or f"HTTP {fetched.status}"
            continue
        try:
            parsed = parse_sitemap(fetched.content, max_bytes=cap)
        except SitemapError as exc:
            result.errors[url] = str(exc)
            continue
        for entry in parsed.entries:
            try:
                canonical = canonicalize_url(entry.url)
            except InvalidURL:
                continue
            if parsed.kind == "sitemapindex":
                if canonical not in queued:
                    queued.add(canonical)
                    queue.append(canonical)
                continue
            if canonical in seen_entries or (entry_allowed is not None and not entry_allowed(canonical)):
                continue
            if len(result.entries) >= max_urls:
                result.truncated = True
                return result
            seen_entries.add(canonical)
            result.entries.append(SitemapEntry(url=canonical, lastmod=entry.lastmod))
    return result
