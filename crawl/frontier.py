"""What a crawl job fetches next: its frontier of CrawlPage rows, kept in the database.

The frontier is **seeded** once per job (``seeded_at``): the start URL (depth 0), the sitemap's
in-scope pages (depth 1, when ``use_sitemap``), and the in-scope pages this source already has
documents for (their earlier depth) — so a re-crawl revisits pages that are no longer linked and
notices when they are gone. Links found on fetched pages are **discovered** one level deeper.
Only URLs in scope (``crawl.scope``) and not disallowed by robots.txt become rows, never more
than ``max_pages`` of them. Pages are fetched from ``queued`` rows by (depth, id), so a restarted
worker resumes where its predecessor was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.db.models import OuterRef, Subquery

from crawl.fetching import Fetcher
from crawl.models import CrawlJob, CrawlPage
from crawl.robots import RobotsCache
from crawl.scope import Scope
from crawl.sitemaps import sitemap_candidates, sitemap_collect
from crawl.urls_canon import InvalidURL, canonicalize_url, url_origin
from documents.models import Document


class Frontier:
    """The job's frontier: in-scope, robots-allowed URLs and the order they are fetched in.

    Makes robots.txt requests through ``fetcher`` (cached per origin) but no page requests.
    """

    def __init__(self, job: CrawlJob, fetcher: Fetcher) -> None:
        self.job = job
        self.fetcher = fetcher
        self.scope = Scope.build(
            start_url=job.start_url,
            allowed_hosts=job.allowed_hosts,
            path_prefix_only=job.path_prefix_only,
            include=job.include_patterns,
            exclude=job.exclude_patterns,
            max_depth=job.max_depth,
        )
        self.robots = RobotsCache(fetcher)
        self.row_count = CrawlPage.objects.filter(job=job).count()

    def robots_refusal(self, url: str) -> str | None:
        """The refusal when robots.txt disallows ``url``; None otherwise (also when it is unreachable)."""
        refusal = self.robots.refusal(url)
        return refusal if refusal == "disallowed by robots.txt" else None

    def discover(self, urls: Iterable[str], *, depth: int | Callable[[str], int]) -> int:
        """Add in-scope, robots-allowed URLs not yet in the frontier, within max_pages."""
        room = self.job.max_pages - self.row_count
        if room <= 0:
            return 0
        candidates: list[tuple[str, int]] = []
        seen: set[str] = set()
        for url in urls:
            page_depth = depth(url) if callable(depth) else depth
            if url in seen or self.scope.refusal(url, depth=page_depth) is not None:
                continue
            seen.add(url)
            candidates.append((url, page_depth))
        if not candidates:
            return 0
        known = set(
            CrawlPage.objects.filter(job=self.job, url__in=[u for u, _ in candidates]).values_list("url", flat=True)
        )
        new_rows = []
        for url, page_depth in candidates:
            if url in known:
                continue
            # Only a robots.txt that disallows the URL keeps it out; an unreachable robots.txt
            # fails the page later, with the reason on it.
            if self.robots_refusal(url):
                continue
            new_rows.append(CrawlPage(job=self.job, url=url, depth=page_depth))
            if len(new_rows) >= room:
                break
        if new_rows:
            CrawlPage.objects.bulk_create(new_rows, ignore_conflicts=True)
            self.row_count += len(new_rows)
        return len(new_rows)

    def followable(self, links: list[str], *, depth: int) -> list[str]:
        """The links a page at ``depth - 1`` may add (none past max_depth), with the robots.txt of
        their hosts fetched now: ``discover`` then runs inside the caller's transaction without
        a request."""
        if not links or depth > self.job.max_depth:
            return []
        for origin_url in {url_origin(link): link for link in links if self.scope.host_allowed(link)}.values():
            self.robots.policy(origin_url)
        return links

    def seed(self) -> int:
        """Add the start URL, the sitemap's pages and the source's known pages; how many were new."""
        start = self.job.start_url
        added = 0
        if not CrawlPage.objects.filter(job=self.job, url=start).exists():
            CrawlPage.objects.create(job=self.job, url=start, depth=0)
            self.row_count += 1
            added += 1
        robots_policy = self.robots.policy(start)
        # A host whose robots.txt is unreachable gets no requests at all, sitemaps included.
        if self.job.use_sitemap and self.job.max_depth >= 1 and not robots_policy.disallow_all:
            found = sitemap_collect(
                self.fetcher,
                sitemap_candidates(start, robots_policy.sitemaps),
                fetch_allowed=lambda url: self.scope.host_allowed(url) and not self.robots_refusal(url),
                entry_allowed=lambda url: self.scope.allows(url, depth=1),
                max_urls=min(int(settings.CRAWL_MAX_SITEMAP_URLS), self.job.max_pages * 10),
            )
            added += self.discover([entry.url for entry in found.entries], depth=1)
        added += self._seed_known_documents()
        return added

    def _seed_known_documents(self) -> int:
        last_depth = (
            CrawlPage.objects.filter(document=OuterRef("pk")).exclude(job=self.job).order_by("-id").values("depth")[:1]
        )
        known = (
            Document.objects.filter(source=self.job.source)
            .exclude(url="")
            .annotate(last_depth=Subquery(last_depth))
            .values_list("url", "last_depth")
        )
        depths: dict[str, int] = {}
        for url, depth in known.iterator(chunk_size=2000):
            try:
                depths[canonicalize_url(url)] = self.job.max_depth if depth is None else min(depth, self.job.max_depth)
            except InvalidURL:
                continue
        return self.discover(sorted(depths, key=lambda u: (depths[u], u)), depth=lambda u: depths[u])

    def next_pages(self, exclude_ids: Iterable[int], limit: int) -> list[CrawlPage]:
        """The next ``limit`` queued pages, shallowest first, leaving out those in flight."""
        return list(
            CrawlPage.objects.filter(job=self.job, status=CrawlPage.Status.QUEUED)
            .exclude(id__in=list(exclude_ids))
            .order_by("depth", "id")[:limit]
        )
