"""Crawl jobs: create, run, cancel, recover. Admin, API, command and task are thin shells over these.

How a job runs (``crawl_job_run``):

1. **Claim** with one conditional UPDATE: a ``queued`` job, or a ``running`` one whose heartbeat
   is older than ``CRAWL_STALE_SECONDS`` (its worker died). Only the claiming worker's
   ``worker_id`` may write the job's progress afterwards; a worker that finds its claim taken
   over stops.
2. **Seed** the frontier once (``seeded_at``): the start URL (depth 0), the sitemap's in-scope
   pages (depth 1, when ``use_sitemap``), and the in-scope pages this source already has
   documents for (their earlier depth) — so a re-crawl revisits pages that are no longer linked
   and notices when they are gone.
3. **Process the frontier from the database**: ``queued`` CrawlPage rows by (depth, id). Fetches
   run on ``CRAWL_CONCURRENCY`` threads, politely (robots.txt, per-host delay); parsing, ingestion
   and all database writes happen on the job's own thread. A page row leaves ``queued`` only when
   its outcome is stored, so a restarted worker redoes at most the pages that were in flight.
4. **Stop** when the frontier is empty, or between pages when ``cancel_requested`` is set
   (status ``cancelled``; what was fetched is kept; unfetched rows become ``skipped``).

Limits: the frontier never holds more than ``max_pages`` rows, so at most ``max_pages`` pages are
requested; links deeper than ``max_depth`` are not followed; links out of scope (see
``crawl.scope``) or disallowed by robots.txt are not recorded at all.

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
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from crawl.fetching import Fetcher, FetchResult, parse_links, x_robots_directives
from crawl.models import CrawlJob, CrawlPage
from crawl.politeness import CrawlStopped, HostRateLimiter
from crawl.robots import RobotsCache
from crawl.safety import UnsafeURL, check_url_safety
from crawl.scope import MAX_URL_CHARS, InvalidPattern, Scope, parse_patterns
from crawl.sitemaps import sitemap_candidates, sitemap_collect
from crawl.urls_canon import InvalidURL, canonicalize_url, url_host_key, url_origin
from documents.models import Document, Source
from documents.services import IngestError, document_delete, document_ingest, source_get_or_create

logger = logging.getLogger(__name__)

MAX_PAGES_LIMIT = 100_000
MAX_DEPTH_LIMIT = 100
# Per list (include, exclude, allowed_hosts): every pattern is tried on every link found.
MAX_PATTERNS = 100
# How often a running job proves it is alive while waiting for slow fetches.
HEARTBEAT_SECONDS = 5.0
PROGRESS_FIELDS = (
    "discovered_count", "fetched_count", "ingested_count", "unchanged_count", "failed_count",
    "gone_count", "skipped_count",
)


# --- create / cancel / recover -------------------------------------------------------------------


def _as_limit(value: object, *, field: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool):
        raise IngestError(f"{field} must be a whole number.", field=field)
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise IngestError(f"{field} must be a whole number.", field=field) from exc
    if number != value and not (isinstance(value, str) and value.strip().lstrip("+-").isdigit()):
        raise IngestError(f"{field} must be a whole number.", field=field)
    if number < minimum:
        raise IngestError(f"{field} must be at least {minimum}.", field=field)
    if number > maximum:
        raise IngestError(f"{field} must be at most {maximum}.", field=field)
    return number


def _as_patterns(value: str | Iterable[str] | None, *, field: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise IngestError(f"{field} must be a list of patterns.", field=field)
    patterns = [item.strip() for item in items if item.strip()]
    if len(patterns) > MAX_PATTERNS:
        raise IngestError(f"{field} holds at most {MAX_PATTERNS} patterns, not {len(patterns)}.", field=field)
    try:
        parse_patterns(patterns)
    except InvalidPattern as exc:
        raise IngestError(str(exc), field=field) from exc
    return patterns


def crawl_job_create(
    *,
    start_url: str,
    source: Source | str | None = None,
    max_pages: int = 100,
    max_depth: int = 3,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    allowed_hosts: str | Iterable[str] | None = None,
    path_prefix_only: bool = False,
    use_sitemap: bool = True,
    delete_missing: bool = False,
) -> CrawlJob:
    """Validate and store a queued job (run it with ``crawl_job_enqueue`` or ``crawl_job_run``).

    Raises IngestError naming the field for a malformed URL, an unsupported scheme, a host that
    does not resolve or resolves to a private address (unless CRAWL_ALLOW_PRIVATE_ADDRESSES), a
    bad limit or pattern. Nothing is stored then.
    """
    if not isinstance(start_url, str):
        raise IngestError("start_url must be a URL.", field="start_url")
    try:
        start = canonicalize_url(start_url)
    except InvalidURL as exc:
        raise IngestError(str(exc), field="start_url") from exc
    if len(start) > MAX_URL_CHARS:
        raise IngestError(f"start_url is at most {MAX_URL_CHARS} characters once normalised.", field="start_url")
    try:
        check_url_safety(start)
    except UnsafeURL as exc:
        raise IngestError(str(exc), field="start_url", code="unsafe") from exc
    max_pages = _as_limit(max_pages, field="max_pages", minimum=1, maximum=MAX_PAGES_LIMIT)
    max_depth = _as_limit(max_depth, field="max_depth", minimum=0, maximum=MAX_DEPTH_LIMIT)
    include_patterns = _as_patterns(include, field="include")
    exclude_patterns = _as_patterns(exclude, field="exclude")
    hosts = _as_patterns(allowed_hosts, field="allowed_hosts")
    try:
        Scope.build(start_url=start, allowed_hosts=hosts)
    except InvalidPattern as exc:
        raise IngestError(str(exc), field="allowed_hosts") from exc

    with transaction.atomic():
        if isinstance(source, Source):
            resolved = source
        else:
            name = (source or "").strip() if isinstance(source, str) or source is None else None
            if name is None:
                raise IngestError("source must be a source name.", field="source")
            name = name or url_host_key(start)
            resolved = source_get_or_create(name=name, kind=Source.Kind.CRAWL, base_url=url_origin(start) + "/")
        return CrawlJob.objects.create(
            source=resolved,
            start_url=start,
            max_pages=max_pages,
            max_depth=max_depth,
            include_patterns=include_patterns,
            exclude_patterns=exclude_patterns,
            allowed_hosts=hosts,
            path_prefix_only=bool(path_prefix_only),
            use_sitemap=bool(use_sitemap),
            delete_missing=bool(delete_missing),
        )


def crawl_job_enqueue(*, job: CrawlJob) -> None:
    """Queue the job for the background worker once the current transaction commits."""
    from crawl.tasks import crawl_job_run_task

    job_id = job.pk
    transaction.on_commit(lambda: crawl_job_run_task.enqueue(job_id))


def crawl_job_cancel(*, job: CrawlJob) -> CrawlJob:
    """Cancel a queued job at once; ask a running one to stop between pages."""
    now = timezone.now()
    CrawlJob.objects.filter(pk=job.pk, status=CrawlJob.Status.QUEUED).update(
        status=CrawlJob.Status.CANCELLED, cancel_requested=True, finished_at=now
    )
    CrawlJob.objects.filter(pk=job.pk, status=CrawlJob.Status.RUNNING).update(cancel_requested=True)
    job.refresh_from_db()
    return job


def crawl_jobs_stale() -> list[int]:
    """Ids of jobs left ``running`` by a worker whose heartbeat stopped (it died)."""
    stale = timezone.now() - timedelta(seconds=float(settings.CRAWL_STALE_SECONDS))
    return list(
        CrawlJob.objects.filter(status=CrawlJob.Status.RUNNING)
        .filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True))
        .order_by("id")
        .values_list("id", flat=True)
    )


def _run_task():
    from crawl.tasks import crawl_job_run_task

    return crawl_job_run_task


def _task_pending(job_id: int) -> bool:
    """Whether a not-yet-started task for this job sits in the database queue."""
    task = _run_task()
    try:
        from django_tasks_db.backend import DatabaseBackend
        from django_tasks_db.models import DBTaskResult
    except ImportError:  # pragma: no cover - the database backend is a requirement
        return False
    if not isinstance(task.get_backend(), DatabaseBackend):
        return False
    return DBTaskResult.objects.filter(status="READY", task_path=task.module_path, args_kwargs__args=[job_id]).exists()


def crawl_job_watch(job_id: int) -> bool:
    """Check on a job another worker runs again once its heartbeat could have gone stale.

    The task of a worker that dies stays "running" in the task queue, so nothing would ever
    resume its job; this deferred re-check (one cheap task per ``CRAWL_STALE_SECONDS`` while
    the job runs elsewhere) claims it once the heartbeat stops. Returns True when queued.
    """
    job = CrawlJob.objects.filter(pk=job_id, status=CrawlJob.Status.RUNNING).first()
    if job is None:
        return False
    task = _run_task()
    if not task.get_backend().supports_defer or _task_pending(job_id):
        return False
    now = timezone.now()
    stale = timedelta(seconds=float(settings.CRAWL_STALE_SECONDS))
    run_after = max(now, (job.heartbeat_at or now) + stale) + timedelta(seconds=1)
    task.using(run_after=run_after).enqueue(job_id)
    return True


def crawl_jobs_recover() -> list[int]:
    """Queue a run for every unfinished job that has no queued task; returns their ids.

    Called when a worker starts (``ragsite.worker.worker_started``): a job whose worker was
    killed is resumed at once if its heartbeat is already stale, else checked again when it
    would be (see ``crawl_job_watch``). Queued jobs younger than a minute are left alone: a
    foreground ``manage.py crawl`` is about to claim them itself. The claim in
    ``crawl_job_run`` makes any duplicate run harmless.
    """
    young = timezone.now() - timedelta(minutes=1)
    ids = list(
        CrawlJob.objects.filter(
            Q(status=CrawlJob.Status.RUNNING) | Q(status=CrawlJob.Status.QUEUED, requested_at__lt=young)
        )
        .order_by("id")
        .values_list("id", flat=True)
    )
    task = _run_task()
    queued = []
    for job_id in ids:
        if not _task_pending(job_id):
            task.enqueue(job_id)
            queued.append(job_id)
    return queued


def crawl_job_abandon(*, job: CrawlJob, reason: str) -> CrawlJob:
    """End a job as cancelled from outside its run (e.g. Ctrl-C on a foreground crawl)."""
    now = timezone.now()
    with transaction.atomic():
        skipped = CrawlPage.objects.filter(job=job, status=CrawlPage.Status.QUEUED).update(
            status=CrawlPage.Status.SKIPPED, error=reason
        )
        CrawlJob.objects.filter(pk=job.pk).exclude(status__in=CrawlJob.FINISHED).update(
            status=CrawlJob.Status.CANCELLED,
            cancel_requested=True,
            error=reason,
            finished_at=now,
            skipped_count=F("skipped_count") + skipped,
        )
    job.refresh_from_db()
    return job


# --- running ---------------------------------------------------------------------------------------


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _claim(job_id: int, worker_id: str) -> bool:
    now = timezone.now()
    stale = now - timedelta(seconds=float(settings.CRAWL_STALE_SECONDS))
    claimable = Q(status=CrawlJob.Status.QUEUED) | Q(
        Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True), status=CrawlJob.Status.RUNNING
    )
    return bool(
        CrawlJob.objects.filter(claimable, pk=job_id).update(
            status=CrawlJob.Status.RUNNING,
            worker_id=worker_id,
            heartbeat_at=now,
            started_at=Coalesce(F("started_at"), now),
        )
    )


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
        self.respect_nofollow = (
            bool(settings.CRAWL_RESPECT_NOFOLLOW) if respect_nofollow is None else respect_nofollow
        )
        self.scope = Scope.build(
            start_url=job.start_url,
            allowed_hosts=job.allowed_hosts,
            path_prefix_only=job.path_prefix_only,
            include=job.include_patterns,
            exclude=job.exclude_patterns,
            max_depth=job.max_depth,
        )
        self.stop = threading.Event()
        self.concurrency = int(settings.CRAWL_CONCURRENCY)
        # Sharing the stop event lets a cancel abort requests on the wire, not only queued ones.
        self.fetcher = Fetcher(max_connections=self.concurrency * 2, stop=self.stop)
        self.robots = RobotsCache(self.fetcher)
        self.limiter = HostRateLimiter(stop=self.stop)
        self.cancelled = False
        self.row_count = CrawlPage.objects.filter(job=job).count()

    # -- frontier --

    def _robots_refusal(self, url: str) -> str | None:
        refusal = self.robots.refusal(url)
        return refusal if refusal == "disallowed by robots.txt" else None

    def _discover(self, urls: Iterable[str], *, depth: int | Callable[[str], int]) -> int:
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
            if self._robots_refusal(url):
                continue
            new_rows.append(CrawlPage(job=self.job, url=url, depth=page_depth))
            if len(new_rows) >= room:
                break
        if new_rows:
            CrawlPage.objects.bulk_create(new_rows, ignore_conflicts=True)
            self.row_count += len(new_rows)
        return len(new_rows)

    def seed(self) -> None:
        if self.job.seeded_at is not None:
            return
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
                fetch_allowed=lambda url: self.scope.host_allowed(url) and not self._robots_refusal(url),
                entry_allowed=lambda url: self.scope.allows(url, depth=1),
                max_urls=min(int(settings.CRAWL_MAX_SITEMAP_URLS), self.job.max_pages * 10),
            )
            added += self._discover([entry.url for entry in found.entries], depth=1)
        added += self._seed_known_documents()
        now = timezone.now()
        with transaction.atomic():
            self._update_job(discovered_count=added)
            CrawlJob.objects.filter(pk=self.job.pk).update(seeded_at=now)
        self.job.seeded_at = now

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
        return self._discover(sorted(depths, key=lambda u: (depths[u], u)), depth=lambda u: depths[u])

    def _next_pages(self, exclude_ids: Iterable[int], limit: int) -> list[CrawlPage]:
        return list(
            CrawlPage.objects.filter(job=self.job, status=CrawlPage.Status.QUEUED)
            .exclude(id__in=list(exclude_ids))
            .order_by("depth", "id")[:limit]
        )

    # -- fetching (worker threads: no database access here) --

    def _redirect_refusal(self, url: str) -> str | None:
        return self.scope.refusal(url) or self._robots_refusal(url)

    def _fetch(self, url: str, previous: _Previous | None) -> _Outcome:
        try:
            refusal = self.robots.refusal(url)
            if refusal:
                unreachable = refusal != "disallowed by robots.txt"
                return _Outcome(robots_refusal=refusal, robots_unreachable=unreachable)
            host = url_host_key(url)
            self.limiter.set_delay(host, self.robots.delay(url))
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
        document_id = (
            Document.objects.filter(source=self.job.source, url=url).values_list("id", flat=True).first()
        )
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
        if links and page.depth + 1 <= self.job.max_depth:
            # Fetch robots.txt of any new host now, not inside the transaction below.
            for origin_url in {url_origin(link): link for link in links if self.scope.host_allowed(link)}.values():
                self.robots.policy(origin_url)
        with transaction.atomic():
            page.save()
            discovered = 0
            if links and page.depth + 1 <= self.job.max_depth:
                discovered = self._discover(links, depth=page.depth + 1)
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
        if (
            previous is not None
            and previous.content_hash == digest
            and result.final_url == page.url
        ):
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
                    for page in self._next_pages(busy, self.concurrency - len(inflight)):
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
    if not _claim(job_id, worker_id):
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
