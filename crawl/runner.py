"""Running a crawl job: fetch its frontier's pages politely, ingest what changed, keep count.

How a job runs (``crawl_job_run``):

1. **Claim** it (``crawl.jobs.crawl_job_claim``). Only the claiming worker's ``worker_id`` may
   write the job's progress afterwards; a worker that finds its claim taken over stops.
2. **Seed** the frontier once (``crawl.frontier.Frontier.seed``).
3. **Process the frontier from the database**: ``queued`` CrawlPage rows by (depth, id). Fetches
   run on ``CRAWL_CONCURRENCY`` threads, politely (robots.txt, per-host delay); parsing, ingestion
   and all database writes happen on the job's own thread. A page row leaves ``queued`` only when
   its outcome is stored, so a restarted worker redoes at most the pages that were in flight.
4. **Stop** when the frontier is empty, or between pages when ``cancel_requested`` is set
   (status ``cancelled``; what was fetched is kept; unfetched rows become ``skipped``).

Counters on the job: ``discovered`` (rows in the frontier), ``fetched`` (pages requested, whatever
the answer), ``ingested`` (new or changed documents), ``unchanged`` (304, same content hash, or
an ingest that changed nothing), ``failed`` (with the reason on the page), ``gone`` (404 / 410),
``skipped`` (robots.txt, noindex, cancelled before fetching).

Incremental re-crawls: a page whose URL already has a document in the source is requested with
the ETag / Last-Modified of its last crawl; ``304`` or an identical body hash skips ingestion,
and ``document_ingest`` itself keeps unchanged chunks, so nothing is re-embedded.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from crawl.fetching import Fetcher, FetchResult, parse_links, x_robots_directives
from crawl.frontier import Frontier
from crawl.jobs import crawl_job_cancel, crawl_job_claim, default_worker_id
from crawl.models import CrawlJob, CrawlPage
from crawl.politeness import CrawlStopped, HostRateLimiter
from crawl.urls_canon import url_host_key, url_origin
from documents.models import Document
from documents.services import IngestError, document_delete, document_ingest

logger = logging.getLogger(__name__)

# How often a running job proves it is alive while waiting for slow fetches.
HEARTBEAT_SECONDS = 5.0


@dataclass
class _Outcome:
    result: FetchResult | None = None
    robots_refusal: str = ""
    robots_unreachable: bool = False
    stopped: bool = False


@dataclass
class _Previous:
    document_id: int
    etag: str
    last_modified: str
    content_hash: str


class _LostClaim(Exception):
    pass


class _JobRun:
    def __init__(
        self,
        job: CrawlJob,
        *,
        worker_id: str,
        on_progress: Callable[[CrawlJob], None] | None,
        respect_nofollow: bool | None = None,
    ) -> None:
        self.job = job
        self.worker_id = worker_id
        self.on_progress = on_progress
        self.respect_nofollow = bool(settings.CRAWL_RESPECT_NOFOLLOW) if respect_nofollow is None else respect_nofollow
        self.stop = threading.Event()
        self.concurrency = int(settings.CRAWL_CONCURRENCY)
        # Sharing the stop event lets a cancel abort requests on the wire, not only queued ones.
        self.fetcher = Fetcher(max_connections=self.concurrency * 2, stop=self.stop)
        self.frontier = Frontier(job, self.fetcher)
        self.limiter = HostRateLimiter(stop=self.stop)
        self.cancelled = False

    def seed(self) -> None:
        if self.job.seeded_at is not None:
            return
        added = self.frontier.seed()
        now = timezone.now()
        with transaction.atomic():
            self._update_job(discovered_count=added)
            CrawlJob.objects.filter(pk=self.job.pk).update(seeded_at=now)
        self.job.seeded_at = now

    # -- fetching (worker threads: no database access here) --

    def _redirect_refusal(self, url: str) -> str | None:
        return self.frontier.scope.refusal(url) or self.frontier.robots_refusal(url)

    def _fetch(self, url: str, previous: _Previous | None) -> _Outcome:
        try:
            refusal = self.frontier.robots.refusal(url)
            if refusal:
                unreachable = refusal != "disallowed by robots.txt"
                return _Outcome(robots_refusal=refusal, robots_unreachable=unreachable)
            host = url_host_key(url)
            self.limiter.set_delay(host, self.frontier.robots.delay(url))
            with self.limiter.slot(host):
                result = self.fetcher.fetch(
                    url,
                    etag=previous.etag if previous else "",
                    last_modified=previous.last_modified if previous else "",
                    redirect_check=self._redirect_refusal,
                )
            return _Outcome(result=result)
        except CrawlStopped:
            return _Outcome(stopped=True)

    def _previous(self, url: str) -> _Previous | None:
        """What the last crawl of this URL into this source stored (for conditional requests)."""
        document_id = Document.objects.filter(source=self.job.source, url=url).values_list("id", flat=True).first()
        if document_id is None:
            return None
        page = (
            CrawlPage.objects.filter(document_id=document_id)
            .exclude(job=self.job)
            .exclude(fetched_at=None)
            .order_by("-fetched_at", "-id")
            .values("etag", "last_modified", "content_hash")
            .first()
        )
        if page is None:
            return _Previous(document_id=document_id, etag="", last_modified="", content_hash="")
        return _Previous(document_id=document_id, **page)

    # -- outcome (job thread) --

    def _update_job(self, **increments: int) -> None:
        changes: dict = {name: F(name) + value for name, value in increments.items() if value}
        changes["heartbeat_at"] = timezone.now()
        updated = CrawlJob.objects.filter(
            pk=self.job.pk, worker_id=self.worker_id, status=CrawlJob.Status.RUNNING
        ).update(**changes)
        if not updated:
            raise _LostClaim

    def heartbeat(self) -> None:
        self._update_job()
        cancel = CrawlJob.objects.filter(pk=self.job.pk).values_list("cancel_requested", flat=True).first()
        if cancel:
            self.cancelled = True

    def _finish_page(self, page: CrawlPage, *, status: str, links: list[str] | None = None, **counters: int) -> None:
        page.status = status
        page.fetched_at = page.fetched_at or timezone.now()
        links = self.frontier.followable(links or [], depth=page.depth + 1)
        with transaction.atomic():
            page.save()
            discovered = self.frontier.discover(links, depth=page.depth + 1) if links else 0
            self._update_job(discovered_count=discovered, **counters)
        if self.on_progress is not None:
            self.job.refresh_from_db()
            self.on_progress(self.job)
        cancel = CrawlJob.objects.filter(pk=self.job.pk).values_list("cancel_requested", flat=True).first()
        if cancel:
            self.cancelled = True

    def process(self, page: CrawlPage, outcome: _Outcome, previous: _Previous | None) -> None:
        if outcome.robots_refusal:
            page.error = outcome.robots_refusal
            if outcome.robots_unreachable:
                self._finish_page(page, status=CrawlPage.Status.FAILED, failed_count=1)
            else:
                self._finish_page(page, status=CrawlPage.Status.SKIPPED, skipped_count=1)
            return
        result = outcome.result
        assert result is not None
        page.http_status = result.status
        page.fetched_at = timezone.now()
        if result.not_modified and previous is not None:
            page.document_id = previous.document_id
            page.etag = result.etag or previous.etag
            page.last_modified = result.last_modified or previous.last_modified
            page.content_hash = previous.content_hash
            page.error = ""
            self._finish_page(page, status=CrawlPage.Status.UNCHANGED, fetched_count=1, unchanged_count=1)
            return
        if result.gone:
            page.error = result.error
            self._handle_gone(page, previous)
            self._finish_page(page, status=CrawlPage.Status.GONE, fetched_count=1, gone_count=1)
            return
        if not result.ok:
            page.error = result.error or f"Unexpected HTTP status {result.status}."
            self._finish_page(page, status=CrawlPage.Status.FAILED, fetched_count=1, failed_count=1)
            return
        self._process_content(page, result, previous)

    def _handle_gone(self, page: CrawlPage, previous: _Previous | None) -> None:
        if not self.job.delete_missing:
            return
        documents = Document.objects.filter(source=self.job.source, url=page.url)
        if previous is not None:
            documents = Document.objects.filter(Q(pk=previous.document_id) | Q(source=self.job.source, url=page.url))
        for document in documents:
            document_delete(document=document)
            page.error = (page.error + " Its document was deleted.").strip()

    def _process_content(self, page: CrawlPage, result: FetchResult, previous: _Previous | None) -> None:
        directives = x_robots_directives(result.headers)
        noindex = bool(directives & {"noindex", "none"})
        nofollow = bool(directives & {"nofollow", "none"})
        links: list[str] = []
        if result.is_html:
            parsed = parse_links(result.content, result.final_url, respect_nofollow=self.respect_nofollow)
            noindex |= parsed.noindex
            nofollow |= parsed.nofollow
            links = parsed.links
        if nofollow:
            links = []
        digest = hashlib.sha256(result.content).hexdigest()
        page.etag = result.etag[:500]
        page.last_modified = result.last_modified[:100]
        page.content_hash = digest
        page.error = ""
        if noindex:
            page.error = "The page asks not to be indexed (noindex)."
            self._finish_page(page, status=CrawlPage.Status.SKIPPED, links=links, fetched_count=1, skipped_count=1)
            return
        if previous is not None and previous.content_hash == digest and result.final_url == page.url:
            page.document_id = previous.document_id
            self._finish_page(page, status=CrawlPage.Status.UNCHANGED, links=links, fetched_count=1, unchanged_count=1)
            return
        mime = f"{result.content_type}; charset={result.charset}" if result.charset else result.content_type
        try:
            ingested = document_ingest(
                source=self.job.source,
                title="",
                url=result.final_url,
                data=result.content,
                mime=mime,
                # Stable across crawls: anything that changes per fetch would make every
                # re-crawl look like a change to the document.
                metadata={"site": url_origin(result.final_url)},
            )
        except IngestError as exc:
            page.error = f"Not ingested: {exc.message}"
            self._finish_page(page, status=CrawlPage.Status.FAILED, links=links, fetched_count=1, failed_count=1)
            return
        except Exception as exc:
            # An embedder or database hiccup on one page must not end the crawl; the reason is
            # on the page and a re-crawl retries it.
            logger.exception("crawl job %s: ingesting %s failed", self.job.pk, page.url)
            page.error = f"Ingestion failed: {type(exc).__name__}: {exc}"[:2000]
            self._finish_page(page, status=CrawlPage.Status.FAILED, links=links, fetched_count=1, failed_count=1)
            return
        page.document = ingested.document
        if ingested.changed:
            self._finish_page(page, status=CrawlPage.Status.INGESTED, links=links, fetched_count=1, ingested_count=1)
        else:
            self._finish_page(page, status=CrawlPage.Status.UNCHANGED, links=links, fetched_count=1, unchanged_count=1)

    # -- main loop --

    def run(self) -> None:
        self.seed()
        self.heartbeat()
        inflight: dict[Future[_Outcome], tuple[CrawlPage, _Previous | None]] = {}
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"crawl-{self.job.pk}")
        try:
            while True:
                if not self.cancelled and len(inflight) < self.concurrency:
                    busy = [page.pk for page, _ in inflight.values()]
                    for page in self.frontier.next_pages(busy, self.concurrency - len(inflight)):
                        previous = self._previous(page.url)
                        inflight[pool.submit(self._fetch, page.url, previous)] = (page, previous)
                if not inflight:
                    break
                done, _ = wait(list(inflight), timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
                if not done:
                    self.heartbeat()
                for future in done:
                    page, previous = inflight.pop(future)
                    outcome = future.result()
                    if self.cancelled or outcome.stopped:
                        continue  # the page stays queued
                    self.process(page, outcome, previous)
                if self.cancelled:
                    # Stop waiting for politeness slots and abort fetches on the wire (their
                    # socket reads check the event every ragsite.outbound.POLL_SECONDS); their
                    # pages stay queued and end skipped.
                    self.stop.set()
        finally:
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self.fetcher.close()

    def finish(self) -> None:
        now = timezone.now()
        with transaction.atomic():
            if self.cancelled:
                leftover = CrawlPage.objects.filter(job=self.job, status=CrawlPage.Status.QUEUED).update(
                    status=CrawlPage.Status.SKIPPED, error="The job was cancelled before this page was fetched."
                )
                self._update_job(skipped_count=leftover)
                status, error = CrawlJob.Status.CANCELLED, ""
            else:
                status, error = self._verdict()
            CrawlJob.objects.filter(pk=self.job.pk, worker_id=self.worker_id).update(
                status=status, error=error, finished_at=now, heartbeat_at=now
            )

    def _verdict(self) -> tuple[str, str]:
        """Failed only when the start page failed and nothing at all was usable."""
        pages = CrawlPage.objects.filter(job=self.job)
        useful = pages.filter(
            status__in=[CrawlPage.Status.INGESTED, CrawlPage.Status.UNCHANGED, CrawlPage.Status.SKIPPED]
        ).exists()
        start = pages.filter(url=self.job.start_url).first()
        if not useful and start is not None and start.status in (CrawlPage.Status.FAILED, CrawlPage.Status.GONE):
            return CrawlJob.Status.FAILED, f"The start URL could not be crawled: {start.error}"
        return CrawlJob.Status.SUCCEEDED, ""


def crawl_job_run(
    job_id: int,
    *,
    worker_id: str | None = None,
    on_progress: Callable[[CrawlJob], None] | None = None,
) -> CrawlJob | None:
    """Claim and run a job to its end; None when it is not claimable (done, or alive elsewhere).

    ``on_progress(job)`` is called on this thread after each page with the refreshed job.
    """
    worker_id = worker_id or default_worker_id()
    job = CrawlJob.objects.select_related("source").filter(pk=job_id).first()
    if job is None:
        logger.info("crawl job %s no longer exists", job_id)
        return None
    if job.status == CrawlJob.Status.QUEUED and job.cancel_requested:
        return crawl_job_cancel(job=job)
    if not crawl_job_claim(job_id, worker_id):
        logger.info("crawl job %s is not claimable (status %s)", job_id, job.status)
        return None
    job.refresh_from_db()
    try:
        run = _JobRun(job, worker_id=worker_id, on_progress=on_progress)
        run.run()
        run.finish()
    except _LostClaim:
        logger.warning("crawl job %s was taken over by another worker; %s stops", job_id, worker_id)
        job.refresh_from_db()
        return job
    except Exception as exc:
        logger.exception("crawl job %s failed", job_id)
        CrawlJob.objects.filter(pk=job_id, worker_id=worker_id).update(
            status=CrawlJob.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:5000],
            finished_at=timezone.now(),
        )
    job.refresh_from_db()
    return job
