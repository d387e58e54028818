"""Keep the keyword statistics (BM25 document frequencies) roughly in step with the corpus.

Stale statistics only shift idf a little, so the refresh is a background task that checks
whether the corpus moved enough before doing the full ``ts_stat`` pass.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def enqueue_stats_refresh() -> None:
    from django.conf import settings

    from search.tasks import keyword_stats_refresh_task

    try:
        if settings.TASKS_BACKEND == "database":
            from django_tasks_db.models import DBTaskResult

            if DBTaskResult.objects.filter(status="READY", task_path=keyword_stats_refresh_task.module_path).exists():
                return
        keyword_stats_refresh_task.enqueue()
    except Exception:
        logger.exception("could not queue the keyword statistics refresh")


def _on_corpus_changed(sender, **kwargs) -> None:
    # Sent after commit, once per transaction or bulk operation (documents.signals).
    enqueue_stats_refresh()


def _on_worker_started(sender, **kwargs) -> None:
    enqueue_stats_refresh()


def connect() -> None:
    from documents.signals import chunks_changed, chunks_deleted
    from ragsite.worker import worker_started

    chunks_changed.connect(_on_corpus_changed, dispatch_uid="search.chunks_changed")
    chunks_deleted.connect(_on_corpus_changed, dispatch_uid="search.chunks_deleted")
    worker_started.connect(_on_worker_started, dispatch_uid="search.worker_started")
