"""Start-up hook: a starting task worker resumes crawls that a dead worker left behind."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def _on_worker_started(sender, **kwargs) -> None:
    from crawl.tasks import crawl_jobs_recover

    ids = crawl_jobs_recover()
    if ids:
        logger.info("re-queued unfinished crawl jobs %s", ids)


def connect() -> None:
    from ragsite.worker import worker_started

    worker_started.connect(_on_worker_started, dispatch_uid="crawl.worker_started")
