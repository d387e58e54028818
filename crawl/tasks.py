"""The crawl's background task and everything that puts it on the queue.

``crawl_job_run_task`` is run by ``manage.py db_worker`` or the embedded worker. It takes an id
and re-reads the job; the claim in ``crawl.runner.crawl_job_run`` makes a duplicate or a
re-queued task harmless. Queueing lives here, beside the task, so that the job services below
(``crawl.jobs``, ``crawl.runner``) never need the task and nothing imports in a circle.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_tasks import task

from crawl.models import CrawlJob
from crawl.runner import crawl_job_run


@task()
def crawl_job_run_task(job_id: int) -> dict | None:
    job = crawl_job_run(job_id)
    if job is None:
        # Not claimable: finished, or running in another worker. In the second case keep an
        # eye on it, so it is resumed if that worker dies.
        crawl_job_watch(job_id)
        return None
    return {
        "status": job.status,
        "fetched": job.fetched_count,
        "ingested": job.ingested_count,
        "unchanged": job.unchanged_count,
        "failed": job.failed_count,
    }


def crawl_job_enqueue(*, job: CrawlJob) -> None:
    """Queue the job for the background worker once the current transaction commits."""
    job_id = job.pk
    transaction.on_commit(lambda: crawl_job_run_task.enqueue(job_id))


def _task_pending(job_id: int) -> bool:
    """Whether a not-yet-started task for this job sits in the database queue."""
    try:
        from django_tasks_db.backend import DatabaseBackend
        from django_tasks_db.models import DBTaskResult
    except ImportError:  # pragma: no cover - the database backend is a requirement
        return False
    if not isinstance(crawl_job_run_task.get_backend(), DatabaseBackend):
        return False
    return DBTaskResult.objects.filter(
        status="READY", task_path=crawl_job_run_task.module_path, args_kwargs__args=[job_id]
    ).exists()


def crawl_job_watch(job_id: int) -> bool:
    """Check on a job another worker runs again once its heartbeat could have gone stale.

    The task of a worker that dies stays "running" in the task queue, so nothing would ever
    resume its job; this deferred re-check (one cheap task per ``CRAWL_STALE_SECONDS`` while
    the job runs elsewhere) claims it once the heartbeat stops. Returns True when queued.
    """
    job = CrawlJob.objects.filter(pk=job_id, status=CrawlJob.Status.RUNNING).first()
    if job is None:
        return False
    if not crawl_job_run_task.get_backend().supports_defer or _task_pending(job_id):
        return False
    now = timezone.now()
    stale = timedelta(seconds=float(settings.CRAWL_STALE_SECONDS))
    run_after = max(now, (job.heartbeat_at or now) + stale) + timedelta(seconds=1)
    crawl_job_run_task.using(run_after=run_after).enqueue(job_id)
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
    queued = []
    for job_id in ids:
        if not _task_pending(job_id):
            crawl_job_run_task.enqueue(job_id)
            queued.append(job_id)
    return queued
