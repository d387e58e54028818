"""Canonical URLs: one spelling per page, so the frontier never holds the same page twice.

Rules (applied by :func:`canonicalize_url`):

- only ``http`` and ``https``; scheme and host lower-cased, a trailing dot on the host dropped,
  internationalised host names IDNA-encoded, default ports (80 / 443) dropped;
- the fragment is dropped (it never reaches the server);
- percent-encoding normalised: escapes of unreserved characters decoded (``%7E`` -> ``~``), other
  escapes upper-cased (``%2f`` -> ``%2F``), stray ``%`` and characters that must be escaped
  (spaces, non-ASCII) encoded as UTF-8;
- an empty path becomes ``/``; ``.`` and ``..`` segments are resolved;
- query parameters whose name matches ``CRAWL_TRACKING_PARAMS`` (shell globs such as ``utm_*``,
  compared case-insensitively) are removed, the remaining ones sorted; an empty query is dropped.
  ``+`` and the order-insensitive sort are the only liberties taken with the query: values are
  never decoded, so ``a=1%262`` stays distinct from ``a=1&2``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from urllib.parse import SplitResult, unquote_plus, urljoin, urlsplit, urlunsplit

from django.conf import settings

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SUB_DELIMS = "!$&'()*+,;="
_PATH_SAFE = frozenset(_UNRESERVED | set(_SUB_DELIMS) | set(":@/"))
# Inside one query key or value: everything a query may hold literally except the separators
# we split on (``&`` between pairs, ``=`` between key and value is allowed in values).
_QUERY_SAFE = frozenset(_UNRESERVED | set("!$'()*+,;=:@/?"))
_HEX = frozenset("0123456789abcdefABCDEF")
# Browsers ignore these anywhere in a URL (WHATWG URL standard), so must we.
_STRIP_INSIDE = re.compile(r"[\t\n\r]")
# Link targets that are not web pages.
_NON_WEB_PREFIX = re.compile(r"^(mailto|javascript|data|tel|sms|ftp|file|about|blob|news|irc):", re.I)


class InvalidURL(ValueError):
    """The text is not a crawlable http(s) URL; the message says why."""


def _normalise_escapes(text: str, safe: frozenset[str]) -> str:
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "%" and i + 2 < n and text[i + 1] in _HEX and text[i + 2] in _HEX:
            byte = int(text[i + 1 : i + 3], 16)
            decoded = chr(byte)
            out.append(decoded if decoded in _UNRESERVED else f"%{byte:02X}")
            i += 3
            continue
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 section 5.2.4, on whole segments.
    if "." not in path:
        return path
    segments = path.split("/")
    output: list[str] = []
    for segment in segments[1:] if path.startswith("/") else segments:
        if segment == ".":
            continue
        if segment == "..":
            if output:
                output.pop()
            continue
        output.append(segment)
    result = "/" + "/".join(output) if path.startswith("/") else "/".join(output)
    # A trailing dot segment names a directory: keep its slash.
    if segments[-1] in (".", "..") and not result.endswith("/"):
        result += "/"
    return result


def _normalise_host(parts: SplitResult, raw_netloc: str) -> str:
    hostname = parts.hostname  # lower-cased by urllib, brackets stripped
    if not hostname:
        raise InvalidURL("The URL has no host.")
    hostname = hostname.rstrip(".")
    if ":" in hostname:  # IPv6 literal
        host = f"[{hostname}]"
    else:
        if not hostname:
            raise InvalidURL("The URL has no host.")
        try:
            hostname.encode("ascii")
        except UnicodeEncodeError:
            try:
                hostname = hostname.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise InvalidURL(f"The host name {hostname!r} is not valid.") from exc
        if not re.fullmatch(r"[a-z0-9._~!$&'()*+,;=%-]+", hostname):
            raise InvalidURL(f"The host name {hostname!r} is not valid.")
        host = hostname
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidURL("The URL has an invalid port.") from exc
    if port is not None and port != DEFAULT_PORTS[parts.scheme.lower()]:
        host = f"{host}:{port}"
    userinfo = raw_netloc.rpartition("@")[0] if "@" in raw_netloc else ""
    return f"{userinfo}@{host}" if userinfo else host


def tracking_params_default() -> list[str]:
    return list(settings.CRAWL_TRACKING_PARAMS)


def _is_tracking(name: str, patterns: list[str]) -> bool:
    lowered = name.lower()
    return any(fnmatchcase(lowered, pattern) for pattern in patterns)


def _normalise_query(query: str, tracking: list[str]) -> str:
    pairs: list[tuple[str, str]] = []
    for piece in query.split("&"):
        if not piece:
            continue
        key, sep, value = piece.partition("=")
        if _is_tracking(unquote_plus(key), tracking):
            continue
        pairs.append((_normalise_escapes(key, _QUERY_SAFE - {"="}), sep + _normalise_escapes(value, _QUERY_SAFE)))
    pairs.sort()
    return "&".join(key + rest for key, rest in pairs)


def canonicalize_url(url: str, *, tracking_params: Iterable[str] | None = None) -> str:
    """Return the canonical spelling of an absolute http(s) URL, or raise InvalidURL."""
    if not isinstance(url, str):
        raise InvalidURL("The URL must be a string.")
    text = _STRIP_INSIDE.sub("", url.strip())
    if not text:
        raise InvalidURL("The URL is empty.")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise InvalidURL(f"The URL is malformed: {exc}.") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidURL("The URL has no scheme; it must start with http:// or https://.")
    if scheme not in SCHEMES:
        raise InvalidURL(f"The scheme {scheme!r} is not supported; use http or https.")
    if not parts.netloc:
        raise InvalidURL("The URL has no host.")
    netloc = _normalise_host(parts, parts.netloc)
    path = _remove_dot_segments(_normalise_escapes(parts.path, _PATH_SAFE)) or "/"
    if not path.startswith("/"):
        path = "/" + path
    patterns = [p.lower() for p in (tracking_params if tracking_params is not None else tracking_params_default())]
    query = _normalise_query(parts.query, patterns)
    return urlunsplit((scheme, netloc, path, query, ""))


def resolve_link(href: str, base_url: str, *, tracking_params: Iterable[str] | None = None) -> str | None:
    """Resolve a link found on ``base_url``; None for links that are not crawlable pages."""
    if not href:
        return None
    href = _STRIP_INSIDE.sub("", href.strip())
    if not href or href.startswith("#") or _NON_WEB_PREFIX.match(href):
        return None
    try:
        absolute = urljoin(base_url, href)
        return canonicalize_url(absolute, tracking_params=tracking_params)
    except (InvalidURL, ValueError):
        return None


def url_host_key(url: str) -> str:
    """``host`` or ``host:port`` (default port omitted) of a canonical URL: the unit of politeness."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return netloc.lower()


def url_origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{url_host_key(url)}"
