"""Politeness: a minimum delay between requests to one host, and one request at a time to it.

Built for a thread pool (the runner fetches with ``CRAWL_CONCURRENCY`` threads and ingests in
its own thread, because ingestion talks to the database and the embedder). Concurrency across
hosts is bounded by the pool size; within a host that has a delay, requests are serialised and
their starts spaced by the delay (Crawl-delay from robots.txt, else ``CRAWL_DEFAULT_DELAY``).
With a delay of 0 requests to a host are not serialised, only bounded by the pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings


class CrawlStopped(Exception):
    """The crawl was asked to stop while waiting for a politeness slot."""


class HostRateLimiter:
    def __init__(
        self,
        *,
        default_delay: float | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_delay = float(settings.CRAWL_DEFAULT_DELAY if default_delay is None else default_delay)
        self.stop = stop or threading.Event()
        self._clock = clock
        self._lock = threading.Lock()
        self._delays: dict[str, float] = {}
        self._next_start: dict[str, float] = {}
        self._host_locks: dict[str, threading.Lock] = {}

    def set_delay(self, host: str, seconds: float | None) -> None:
        with self._lock:
            self._delays[host] = self.default_delay if seconds is None else max(0.0, float(seconds))

    def delay_for(self, host: str) -> float:
        with self._lock:
            return self._delays.get(host, self.default_delay)

    def _host_lock(self, host: str) -> threading.Lock:
        with self._lock:
            return self._host_locks.setdefault(host, threading.Lock())

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Hold this while requesting from ``host``; raises CrawlStopped if stopped while waiting."""
        delay = self.delay_for(host)
        if delay <= 0:
            if self.stop.is_set():
                raise CrawlStopped
            yield
            return
        lock = self._host_lock(host)
        # Poll the lock so a stop request does not wait behind a slow request to the same host.
        while not lock.acquire(timeout=0.2):
            if self.stop.is_set():
                raise CrawlStopped
        try:
            with self._lock:
                start = max(self._clock(), self._next_start.get(host, 0.0))
                self._next_start[host] = start + delay
            wait = start - self._clock()
            if wait > 0 and self.stop.wait(wait):
                raise CrawlStopped
            if self.stop.is_set():
                raise CrawlStopped
            yield
        finally:
            lock.release()
