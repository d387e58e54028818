"""robots.txt rules per origin, parsed with Protego and cached.

How each outcome of fetching ``/robots.txt`` is treated (RFC 9309, section 2.3.1):

- **2xx**: parsed (the first 512 KiB; the RFC asks for at least 500 KiB). Groups are matched on
  the product token of ``CRAWL_USER_AGENT`` (``ragsite-crawler`` for
  ``ragsite-crawler/1.0 (+https://...)``), never on the rest of the header, so a group named
  after a word in our contact URL cannot apply to us. Cached ``CRAWL_ROBOTS_CACHE_SECONDS``.
- **4xx** (404, 401, 403, 410, ...), and more redirects than ``CRAWL_MAX_REDIRECTS``:
  "unavailable" — everything is allowed, as the RFC says.
- **429, 5xx, timeouts and connection errors**: "unreachable" — everything is *disallowed*, as
  the RFC requires (a server in trouble must not be crawled harder). This verdict is cached only
  ``CRAWL_ROBOTS_ERROR_SECONDS`` (default 10 minutes), after which robots.txt is fetched
  again; pages refused meanwhile fail with a reason that names the robots.txt error. 429 is
  grouped with 5xx (as Google does) because it explicitly asks the client to back off.
- A robots.txt whose host is refused by the safety check (a private address) is unreachable too.

Crawl delay: ``Crawl-delay`` for our group, or the interval implied by ``Request-rate``
(whichever is longer), capped at ``CRAWL_MAX_CRAWL_DELAY``; without either,
``CRAWL_DEFAULT_DELAY``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from protego import Protego

from crawl.fetching import Fetcher
from crawl.urls_canon import url_origin

ROBOTS_MAX_BYTES = 512 * 1024


def product_token(user_agent: str) -> str:
    token = user_agent.strip().split("/", 1)[0].split(None, 1)[0] if user_agent.strip() else ""
    return token.lower() or "*"


@dataclass
class RobotsPolicy:
    origin: str
    parser: Protego | None = None
    disallow_all: bool = False
    reason: str = ""
    crawl_delay: float | None = None
    sitemaps: list[str] = field(default_factory=list)
    expires_at: float = 0.0

    def allows(self, url: str, token: str) -> bool:
        if self.disallow_all:
            return False
        if self.parser is None:
            return True
        return self.parser.can_fetch(url, token)


class RobotsCache:
    """Thread-safe: concurrent callers for one origin wait for a single fetch of its robots.txt."""

    def __init__(
        self,
        fetcher: Fetcher,
        *,
        user_agent: str | None = None,
        default_delay: float | None = None,
        max_delay: float | None = None,
        ttl: float | None = None,
        error_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetcher = fetcher
        self.token = product_token(user_agent or settings.CRAWL_USER_AGENT)
        self.default_delay = float(settings.CRAWL_DEFAULT_DELAY if default_delay is None else default_delay)
        self.max_delay = float(settings.CRAWL_MAX_CRAWL_DELAY if max_delay is None else max_delay)
        self.ttl = float(settings.CRAWL_ROBOTS_CACHE_SECONDS if ttl is None else ttl)
        self.error_ttl = float(settings.CRAWL_ROBOTS_ERROR_SECONDS if error_ttl is None else error_ttl)
        self._clock = clock
        self._lock = threading.Lock()
        self._origin_locks: dict[str, threading.Lock] = {}
        self._policies: dict[str, RobotsPolicy] = {}

    def policy(self, url: str) -> RobotsPolicy:
        origin = url_origin(url)
        with self._lock:
            cached = self._policies.get(origin)
            if cached is not None and cached.expires_at > self._clock():
                return cached
            origin_lock = self._origin_locks.setdefault(origin, threading.Lock())
        with origin_lock:
            with self._lock:
                cached = self._policies.get(origin)
                if cached is not None and cached.expires_at > self._clock():
                    return cached
            fresh = self._fetch(origin)
            with self._lock:
                self._policies[origin] = fresh
            return fresh

    def refusal(self, url: str) -> str | None:
        """Why robots.txt forbids ``url``, or None when it may be fetched."""
        policy = self.policy(url)
        if policy.allows(url, self.token):
            return None
        if policy.disallow_all:
            return f"robots.txt of {policy.origin} is unreachable ({policy.reason}); not crawling it for now"
        return "disallowed by robots.txt"

    def allowed(self, url: str) -> bool:
        return self.refusal(url) is None

    def delay(self, url: str) -> float:
        policy = self.policy(url)
        if policy.crawl_delay is None:
            return self.default_delay
        return min(policy.crawl_delay, self.max_delay)

    def sitemaps(self, url: str) -> list[str]:
        return list(self.policy(url).sitemaps)

    def _fetch(self, origin: str) -> RobotsPolicy:
        result = self.fetcher.fetch(
            f"{origin}/robots.txt", allowed_types=None, max_bytes=ROBOTS_MAX_BYTES, truncate=True
        )
        now = self._clock()
        if result.ok:
            text = result.content.decode("utf-8", errors="replace").lstrip("\ufeff")
            parser = Protego.parse(text)
            return RobotsPolicy(
                origin=origin,
                parser=parser,
                crawl_delay=_crawl_delay(parser, self.token),
                sitemaps=list(parser.sitemaps),
                expires_at=now + self.ttl,
            )
        status = result.status
        if (
            result.error_code in ("http_status", "too_many_redirects", "redirect_loop", "bad_redirect")
            and status != 429
            and (status is None or status < 500)
        ):
            return RobotsPolicy(origin=origin, reason=result.error, expires_at=now + self.ttl)
        reason = f"HTTP {status}" if result.error_code == "http_status" else result.error.rstrip(".")
        return RobotsPolicy(origin=origin, disallow_all=True, reason=reason, expires_at=now + self.error_ttl)


def _crawl_delay(parser: Protego, token: str) -> float | None:
    delays = []
    delay = parser.crawl_delay(token)
    if delay is not None:
        delays.append(float(delay))
    rate = parser.request_rate(token)
    if rate is not None and rate.requests:
        delays.append(float(rate.seconds) / float(rate.requests))
    return max(delays) if delays else None
