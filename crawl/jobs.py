"""Crawl jobs: create, cancel, abandon, claim. Admin, API, command and task are thin shells over these.

A job is created ``queued`` (``crawl_job_create`` validates everything first, so nothing is
stored for bad input) and queued for the worker by ``crawl.tasks.crawl_job_enqueue``. A worker
runs it with ``crawl.runner.crawl_job_run`` after claiming it (``crawl_job_claim``): one
conditional UPDATE takes a ``queued`` job, or a ``running`` one whose heartbeat is older than
``CRAWL_STALE_SECONDS`` (its worker died). A job ends ``succeeded``, ``failed`` or ``cancelled``;
``crawl_job_cancel`` asks, ``crawl_job_abandon`` ends it from outside its run.

Limits: the frontier never holds more than ``max_pages`` rows, so at most ``max_pages`` pages are
requested; links deeper than ``max_depth`` are not followed; links out of scope (see
``crawl.scope``) or disallowed by robots.txt are not recorded at all (``crawl.frontier``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from crawl.models import CrawlJob, CrawlPage
from crawl.safety import UnsafeURL, check_url_safety
from crawl.scope import MAX_URL_CHARS, InvalidPattern, Scope, parse_patterns
from crawl.urls_canon import InvalidURL, canonicalize_url, url_host_key, url_origin
from documents.models import Source
from documents.services import IngestError, source_get_or_create

MAX_PAGES_LIMIT = 100_000
MAX_DEPTH_LIMIT = 100
# Per list (include, exclude, allowed_hosts): every pattern is tried on every link found.
MAX_PATTERNS = 100


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
    """Validate and store a queued job (queue it with ``crawl.tasks.crawl_job_enqueue``, or run it in this process
    with ``crawl.runner.crawl_job_run``).

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


# --- claiming ------------------------------------------------------------------------------------


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def crawl_job_claim(job_id: int, worker_id: str) -> bool:
    """Make ``worker_id`` the job's only writer: True for a queued job or one whose worker died."""
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
