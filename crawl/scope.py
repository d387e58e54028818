"""Which URLs a crawl job may visit.

The rules, in the order they are checked (all on canonical URLs, see ``crawl.urls_canon``):

1. **Host.** By default only the start URL's host (with its port, if not the default one) is in
   scope; ``http`` and ``https`` on that host both count, because sites redirect between them.
   ``localhost`` and ``127.0.0.1`` are different hosts, so are ``example.com`` and
   ``www.example.com``. ``allowed_hosts`` adds hosts: each entry is a shell glob matched against
   ``host`` or ``host:port`` (the port is present only when it is not the scheme's default), so
   ``*.example.com`` allows subdomains on the default ports, ``docs.example.com:8080`` that port,
   ``localhost:*`` any port. A full URL is accepted too and stands for its host.
2. **Path prefix** (``path_prefix_only``). Only URLs below the start URL's directory are in
   scope: for ``https://h/docs/guide/intro.html`` or ``https://h/docs/guide/`` that is
   ``/docs/guide/``; a last segment without a dot (``https://h/docs``) is taken as the directory
   itself (``/docs/``, and ``/docs`` also matches). Applies on the start URL's host only.
3. **Exclude patterns.** A URL matching any exclude pattern is out of scope.
4. **Include patterns.** If there are any, a URL must match at least one. The start URL itself
   is exempt (the crawl has to begin somewhere), so ``include=["/docs/api/*"]`` with a start URL
   of ``/docs/`` crawls the API pages linked from there.
5. **Depth.** Pages more than ``max_depth`` links away from the start URL are out of scope.

Pattern syntax (include and exclude alike):

- ``re:<regex>`` — a Python regular expression, searched (``re.search``) in the full canonical
  URL, e.g. ``re:/v[0-9]+/`` or ``re:\\.pdf$``.
- a glob starting with ``/`` — matched (``fnmatch``, case-sensitive, ``*`` also crosses ``/``)
  against the URL's path, without the query: ``/blog/*``, ``*.pdf`` is *not* of this kind.
- any other glob — matched against the full canonical URL including the query:
  ``https://example.com/docs/*``, ``*.pdf``, ``*?page=*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from crawl.urls_canon import InvalidURL, canonicalize_url, url_host_key


class InvalidPattern(ValueError):
    """A pattern does not compile; the message names the pattern."""


@dataclass(frozen=True)
class Pattern:
    text: str
    regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> Pattern:
        text = text.strip()
        if not text:
            raise InvalidPattern("A pattern is empty.")
        if text.startswith("re:"):
            try:
                return cls(text=text, regex=re.compile(text[3:]))
            except re.error as exc:
                raise InvalidPattern(f"The regular expression {text[3:]!r} is invalid: {exc}.") from exc
        return cls(text=text)

    def matches(self, url: str) -> bool:
        if self.regex is not None:
            return self.regex.search(url) is not None
        if self.text.startswith("/"):
            return fnmatchcase(urlsplit(url).path, self.text)
        return fnmatchcase(url, self.text)


def parse_patterns(patterns: Iterable[str] | None) -> tuple[Pattern, ...]:
    return tuple(Pattern.parse(p) for p in (patterns or ()) if p and p.strip())


def _normalise_host_entry(entry: str) -> str:
    entry = entry.strip().lower().rstrip("/")
    if "://" in entry:
        entry = url_host_key(canonicalize_url(entry))
    return entry


def _directory_prefix(path: str) -> str:
    if path.endswith("/"):
        return path
    head, _, last = path.rpartition("/")
    if "." in last:
        return head + "/"
    return path + "/"


@dataclass(frozen=True)
class Scope:
    start_url: str
    allowed_hosts: tuple[str, ...] = ()
    path_prefix: str | None = None
    include: tuple[Pattern, ...] = ()
    exclude: tuple[Pattern, ...] = ()
    max_depth: int | None = None
    _start_host: str = field(default="", repr=False)

    @classmethod
    def build(
        cls,
        *,
        start_url: str,
        allowed_hosts: Iterable[str] | None = None,
        path_prefix_only: bool = False,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        max_depth: int | None = None,
    ) -> Scope:
        """Raises InvalidURL for a bad start URL and InvalidPattern for a bad pattern."""
        start = canonicalize_url(start_url)
        hosts = []
        for entry in allowed_hosts or ():
            if entry and entry.strip():
                try:
                    hosts.append(_normalise_host_entry(entry))
                except InvalidURL as exc:
                    raise InvalidPattern(f"The allowed host {entry!r} is invalid: {exc}") from exc
        prefix = _directory_prefix(urlsplit(start).path) if path_prefix_only else None
        return cls(
            start_url=start,
            allowed_hosts=tuple(hosts),
            path_prefix=prefix,
            include=parse_patterns(include),
            exclude=parse_patterns(exclude),
            max_depth=max_depth,
            _start_host=url_host_key(start),
        )

    def host_allowed(self, url: str) -> bool:
        host = url_host_key(url)
        if host == self._start_host:
            return True
        return any(fnmatchcase(host, entry) for entry in self.allowed_hosts)

    def refusal(self, url: str, *, depth: int = 0) -> str | None:
        """Why a canonical URL is out of scope, or None when it is in scope."""
        if urlsplit(url).scheme not in ("http", "https"):
            return "not an http(s) URL"
        if not self.host_allowed(url):
            return f"host {url_host_key(url)} is outside the crawl scope"
        if self.path_prefix is not None and url_host_key(url) == self._start_host:
            path = urlsplit(url).path
            if not (path.startswith(self.path_prefix) or path == self.path_prefix.rstrip("/")):
                return f"path is outside {self.path_prefix}"
        for pattern in self.exclude:
            if pattern.matches(url):
                return f"excluded by pattern {pattern.text!r}"
        if self.include and url != self.start_url and not any(p.matches(url) for p in self.include):
            return "matches no include pattern"
        if self.max_depth is not None and depth > self.max_depth:
            return f"deeper than max depth {self.max_depth}"
        return None

    def allows(self, url: str, *, depth: int = 0) -> bool:
        return self.refusal(url, depth=depth) is None
