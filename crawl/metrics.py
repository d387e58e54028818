"""The crawl app's gauge for /metrics, read from its table at scrape time."""

from __future__ import annotations

from crawl.models import CrawlPage
from ragsite.metrics import status_gauge


def database_gauges():
    yield status_gauge("ragsite_crawl_pages", "Crawl pages by outcome.", CrawlPage, "status", CrawlPage.Status.values)
