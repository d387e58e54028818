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

URLs longer than ``MAX_URL_CHARS`` (2,000) are always out of scope: that is what can be stored.

Pattern syntax (include and exclude alike; each at most ``MAX_PATTERN_CHARS`` characters):

- ``re:<regex>`` — a regular expression in RE2 syntax, searched in the full canonical URL, e.g.
  ``re:/v[0-9]+/`` or ``re:\\.pdf$``. Patterns come from users and are matched against URLs
  that crawled sites choose, so they run on RE2, whose matching time is linear in the URL
  whatever the pattern: ``re:(a+)+$`` is harmless, where Python's ``re`` would backtrack for
  hours on a long URL while holding the GIL. RE2 has no backreferences (``\\1``) and no
  lookaround (``(?=``, ``(?!``, ``(?<=``); such a pattern is refused with the reason. ``\\d``,
  ``\\w`` and ``\\b`` are ASCII-only (canonical URLs are ASCII anyway).
- a glob starting with ``/`` — matched (``fnmatch``, case-sensitive, ``*`` also crosses ``/``)
  against the URL's path, without the query: ``/blog/*``, ``*.pdf`` is *not* of this kind.
- any other glob — matched against the full canonical URL including the query:
  ``https://example.com/docs/*``, ``*.pdf``, ``*?page=*``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

import re2

from crawl.urls_canon import InvalidURL, canonicalize_url, url_host_key

# The URL columns of CrawlPage and Document hold this much; a crawled site can link to longer
# URLs (the link text is the site's choice), and those are out of scope instead of an error.
MAX_URL_CHARS = 2000
# Long enough for any real URL rule; short enough that compiling or matching (globs run on
# Python's fnmatch, whose atomic groups keep it linear per "*") stays cheap.
MAX_PATTERN_CHARS = 500
# RE2 refuses a regex whose compiled program would need more memory than this (e.g.
# "[a-z]{1000}" nested in repetitions), instead of building it.
_RE2_MAX_MEM = 4 * 1024 * 1024


class InvalidPattern(ValueError):
    """A pattern does not compile; the message names the pattern."""


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.max_mem = _RE2_MAX_MEM
    options.log_errors = False  # the reason goes back to the user, not to stderr
    return options


def compile_regex(expression: str) -> Any:
    """Compile a user's regex with RE2 (linear-time matching), or raise InvalidPattern."""
    try:
        return re2.compile(expression, _re2_options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise InvalidPattern(
            f"The regular expression {expression!r} cannot be used: {reason}. Patterns use RE2 syntax, "
            "which has no backreferences or lookaround, so that matching always takes linear time."
        ) from exc


@dataclass(frozen=True)
class Pattern:
    text: str
    regex: Any = None  # a compiled RE2 regex

    @classmethod
    def parse(cls, text: str) -> Pattern:
        text = text.strip()
        if not text:
            raise InvalidPattern("A pattern is empty.")
        if len(text) > MAX_PATTERN_CHARS:
            raise InvalidPattern(
                f"A pattern is at most {MAX_PATTERN_CHARS} characters ({text[:40]!r}... has {len(text)})."
            )
        if text.startswith("re:"):
            return cls(text=text, regex=compile_regex(text[3:]))
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
        if len(url) > MAX_URL_CHARS:
            return f"longer than {MAX_URL_CHARS} characters"
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
