"""Reading uploads that need OCR, in the task worker (`manage.py db_worker` or the embedded worker).

An upload over HTTP that needs OCR is stored PROCESSING by the ingest service and answered 202 at
once (documents.services.document_ingest with ``defer_ocr``); ``document_read_task`` reads it here,
where no request timeout applies and no other user's upload waits behind it. Queueing lives here,
beside the task: the services never need the task, and nothing imports in a circle.

The task takes an id and re-reads the document; ``document_read`` makes a duplicate, a retry or
a re-queued task (its worker died) harmless, and bounds the attempts.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django_tasks import task

from documents.filestore import FileStoreUnavailable
from documents.services import READ_RETRY_SECONDS, document_read, document_read_interrupted, documents_to_read
from ragsite.worker import WorkerStopping, raise_if_stopping, worker_started

logger = logging.getLogger(__name__)


@task()
def document_read_task(document_id: int) -> dict | None:
    try:
        # Between pages: a stopping worker hands the task back instead of finishing a long scan.
        result = document_read(document_id, on_page=lambda page: raise_if_stopping())
    except WorkerStopping:
        raise  # handed back to the queue by the worker; that start was not counted
    except FileStoreUnavailable:
        _interrupted(document_id, "The store of uploaded files could not be reached to read it; send it again.")
        raise
    except Exception:
        # Not the file's fault (a bug, the database): the log has the details, the document a sentence.
        _interrupted(document_id, "An error on the server stopped the reading; send the file again to retry.")
        raise
    if result is None:
        return None
    return {"document": document_id, "chunks_added": result.chunks_added, "chunks_removed": result.chunks_removed}


def _interrupted(document_id: int, reason: str) -> None:
    """Try again later while attempts are left (the document stays PROCESSING), else it FAILED."""
    if not document_read_interrupted(document_id, reason):
        return
    backend = document_read_task.get_backend()
    if not backend.supports_defer:
        return  # the next worker start queues it (document_reads_recover)
    run_after = timezone.now() + timedelta(seconds=READ_RETRY_SECONDS)
    try:
        document_read_task.using(run_after=run_after).enqueue(document_id)
    except Exception:
        logger.exception("could not queue another read of document %s; the next worker start will", document_id)


def document_read_enqueue(document_id: int) -> None:
    """Queue the reading of an upload once the current transaction commits."""
    transaction.on_commit(lambda: _enqueue(document_id))


def _enqueue(document_id: int) -> None:
    try:
        document_read_task.enqueue(document_id)
    except Exception:
        # Still PROCESSING: the next worker start queues it (document_reads_recover).
        logger.exception("could not queue the reading of document %s", document_id)


def _task_waiting(document_id: int) -> bool:
    """Whether a read of this document is queued or running (the database queue only)."""
    from django_tasks_db.backend import DatabaseBackend
    from django_tasks_db.models import DBTaskResult

    if not isinstance(document_read_task.get_backend(), DatabaseBackend):
        return False
    return DBTaskResult.objects.filter(
        status__in=["READY", "RUNNING"], task_path=document_read_task.module_path, args_kwargs__args=[document_id]
    ).exists()


def document_reads_recover(sender=None, **kwargs) -> list[int]:
    """Queue a read for every PROCESSING document that has none (``worker_started`` receiver).

    Its queueing may have been lost (a crash between commit and enqueue), or its task given up
    by the worker reaper (``ragsite.worker.tasks_reap``: its worker died too often); the read
    counts attempts itself and fails the document once they are spent, so this cannot loop.
    Runs after the reaper, so a dead worker's task is READY again, not running.
    """
    queued = []
    for document_id in documents_to_read():
        if not _task_waiting(document_id):
            _enqueue(document_id)
            queued.append(document_id)
    if queued:
        logger.info("queued the reading of %d upload(s) left waiting", len(queued))
    return queued


def connect() -> None:
    worker_started.connect(document_reads_recover, dispatch_uid="documents.document_reads_recover")
