"""Background tasks for crawling (run by `manage.py db_worker` or the embedded worker).

The task takes an id and re-reads the job; the claim in ``crawl_job_run`` makes a duplicate or
a re-queued task harmless.
"""

from __future__ import annotations

from django_tasks import task


@task()
def crawl_job_run_task(job_id: int) -> dict | None:
    from crawl.services import crawl_job_run, crawl_job_watch

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
