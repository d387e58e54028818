from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from crawl.politeness import CrawlStopped, HostRateLimiter


def max_overlap(limiter: HostRateLimiter, host: str, workers: int = 4) -> int:
    inside = 0
    peak = 0
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def work(_):
        nonlocal inside, peak
        barrier.wait()
        with limiter.slot(host):
            with lock:
                inside += 1
                peak = max(peak, inside)
            threading.Event().wait(0.1)
            with lock:
                inside -= 1

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(workers)))
    return peak


def test_requests_to_a_host_with_a_delay_never_overlap():
    limiter = HostRateLimiter(default_delay=0.001)
    assert max_overlap(limiter, "h") == 1


def test_without_a_delay_requests_may_run_in_parallel():
    limiter = HostRateLimiter(default_delay=0)
    assert max_overlap(limiter, "h") > 1


def test_delays_are_per_host():
    limiter = HostRateLimiter(default_delay=0.5)
    limiter.set_delay("slow.example", 3)
    assert limiter.delay_for("slow.example") == 3
    assert limiter.delay_for("other.example") == 0.5


def test_the_next_request_is_scheduled_a_delay_after_the_previous_start():
    now = [100.0]
    limiter = HostRateLimiter(default_delay=2, clock=lambda: now[0])
    with limiter.slot("h"):
        pass
    assert limiter._next_start["h"] == 102.0
    now[0] = 105.0
    with limiter.slot("h"):
        pass
    assert limiter._next_start["h"] == 107.0


def test_stopping_interrupts_a_wait():
    stop = threading.Event()
    limiter = HostRateLimiter(default_delay=60, stop=stop)
    with limiter.slot("h"):
        pass
    threading.Timer(0.05, stop.set).start()
    with pytest.raises(CrawlStopped), limiter.slot("h"):
        pass
