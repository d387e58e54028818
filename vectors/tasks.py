"""Background tasks (Django's tasks API; `manage.py db_worker` or the embedded worker runs them).

Tasks take ids, re-read the database, and are idempotent, so a duplicate or a retry is harmless.
"""

from __future__ import annotations

import logging

from django_tasks import task

logger = logging.getLogger(__name__)


@task()
def vectors_sync_task() -> dict:
    from documents.sync import vectors_sync_pending

    report = vectors_sync_pending()
    return {"indexed": report.indexed, "failed": report.failed, "stopped_by": report.stopped_by}


@task()
def vectors_delete_task(chunk_ids: list[str]) -> int:
    from documents.sync import vectors_delete

    vectors_delete(chunk_ids)
    return len(chunk_ids)
