"""Background tasks (Django's tasks API; `manage.py db_worker` or the embedded worker runs them),
and the functions that queue them.

Tasks take ids, re-read the database, and are idempotent, so a duplicate or a retry is harmless.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django_tasks import task

from vectors.sync import vectors_delete, vectors_sync_pending

logger = logging.getLogger(__name__)


@task()
def vectors_sync_task() -> dict:
    report = vectors_sync_pending()
    return {"indexed": report.indexed, "failed": report.failed, "stopped_by": report.stopped_by}


@task()
def vectors_delete_task(chunk_ids: list[str]) -> int:
    vectors_delete(chunk_ids)
    return len(chunk_ids)


def enqueue_vector_sync() -> None:
    try:
        if _sync_already_queued():
            return
        vectors_sync_task.enqueue()
    except Exception:
        # The sweep (`vectors_sync`, and the worker at start-up) picks up pending chunks later.
        logger.exception("could not queue the vector sync; chunks stay pending until the next sweep")


def _sync_already_queued() -> bool:
    if settings.TASKS_BACKEND != "database":
        return False
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(status="READY", task_path=vectors_sync_task.module_path).exists()


def enqueue_vector_delete(chunk_ids: list[str]) -> None:
    try:
        for start in range(0, len(chunk_ids), 1000):
            vectors_delete_task.enqueue(chunk_ids[start : start + 1000])
    except Exception:
        logger.exception("could not queue the deletion of %d points; vectors_sync removes them later", len(chunk_ids))
