"""Thin receivers: after the transaction commits, queue a vector sync or a point deletion.

Receivers pass ids, never instances. The truth stays in the database (``index_status``), so a
missed signal (bulk writes, a crash between commit and enqueue) is repaired by
``manage.py vectors_sync``.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from documents.models import Chunk, Document

logger = logging.getLogger(__name__)

_state = threading.local()


def _deferred() -> dict | None:
    return getattr(_state, "deferred", None)


@contextmanager
def vector_sync_deferred(*, enqueue_sync: bool = True):
    """Collect sync requests during a bulk operation and queue one sync at the end.

    With ``enqueue_sync=False`` the caller promises to sync pending chunks itself (commands that
    embed in the foreground with a progress bar); point deletions are still queued. Other apps'
    once-per-change follow-ups registered with ``after_bulk`` run once at the end too.
    """
    outer = _deferred()
    if outer is not None:
        yield outer
        return
    _state.deferred = {"sync": False, "delete": [], "after": {}}
    try:
        yield _state.deferred
    finally:
        collected = _state.deferred
        _state.deferred = None
        if collected["delete"]:
            _enqueue_delete(collected["delete"])
        if collected["sync"] and enqueue_sync:
            enqueue_vector_sync()
        for callback in collected["after"].values():
            callback()


def after_bulk(callback) -> bool:
    """Inside ``vector_sync_deferred``: run ``callback`` once when the bulk operation ends; True.

    Outside one: False, and the caller does its usual per-transaction follow-up. Used by the
    search app to queue one keyword-statistics refresh per bulk ingest instead of a check query
    per document (1.9 ms of ~10 ms storing a SciFact abstract, bench/results/ingest.md).
    """
    deferred = _deferred()
    if deferred is None:
        return False
    deferred["after"].setdefault(callback, callback)
    return True


def enqueue_vector_sync() -> None:
    from documents.tasks import vectors_sync_task

    try:
        if _sync_already_queued():
            return
        vectors_sync_task.enqueue()
    except Exception:
        # The sweep (`vectors_sync`, and the worker at start-up) picks up pending chunks later.
        logger.exception("could not queue the vector sync; chunks stay pending until the next sweep")


def _sync_already_queued() -> bool:
    from django.conf import settings

    if settings.TASKS_BACKEND != "database":
        return False
    from django_tasks_db.models import DBTaskResult

    from documents.tasks import vectors_sync_task

    return DBTaskResult.objects.filter(status="READY", task_path=vectors_sync_task.module_path).exists()


def _enqueue_delete(chunk_ids: list[str]) -> None:
    from documents.tasks import vectors_delete_task

    try:
        for start in range(0, len(chunk_ids), 1000):
            vectors_delete_task.enqueue(chunk_ids[start : start + 1000])
    except Exception:
        logger.exception("could not queue the deletion of %d points; vectors_sync removes them later", len(chunk_ids))


def _request_sync() -> None:
    deferred = _deferred()
    if deferred is not None:
        deferred["sync"] = True
    else:
        transaction.on_commit(enqueue_vector_sync)


@receiver(post_save, sender=Document, dispatch_uid="documents.document_saved")
@receiver(post_save, sender=Chunk, dispatch_uid="documents.chunk_saved")
def on_saved(sender, instance, **kwargs):
    _request_sync()


class _DeleteBuffer:
    """Chunk ids deleted in the current transaction, flushed by one on_commit callback."""

    def add(self, chunk_id: str) -> None:
        deferred = _deferred()
        if deferred is not None:
            deferred["delete"].append(chunk_id)
            return
        buffer = getattr(_state, "delete_buffer", None)
        if buffer is None or not self._flush_registered():
            # First delete in this transaction, or the previous one rolled back (its callback
            # was discarded with it): start a new buffer with its own callback.
            buffer = _state.delete_buffer = []
            transaction.on_commit(self.flush)
        buffer.append(chunk_id)

    def _flush_registered(self) -> bool:
        from django.db import connection

        return any(entry[1] == self.flush for entry in connection.run_on_commit)

    def flush(self) -> None:
        buffer = getattr(_state, "delete_buffer", None) or []
        _state.delete_buffer = None
        if buffer:
            _enqueue_delete(buffer)


_delete_buffer = _DeleteBuffer()


@receiver(post_delete, sender=Chunk, dispatch_uid="documents.chunk_deleted")
def on_chunk_deleted(sender, instance, **kwargs):
    _delete_buffer.add(str(instance.pk))


def _on_worker_started(sender, **kwargs):
    # Chunks left pending by a crash between commit and enqueue, or by an outage.
    if Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING).exists():
        enqueue_vector_sync()


def _start_healer(sender, *, stopping, **kwargs):
    # Retries with backoff and the periodic drift check, in the process that owns the store.
    from documents.repair import VectorsHealer

    VectorsHealer(stopping).start()


def _connect_worker_hooks() -> None:
    from ragsite.worker import worker_periodic, worker_started

    worker_started.connect(_on_worker_started, dispatch_uid="documents.worker_started")
    worker_periodic.connect(_start_healer, dispatch_uid="documents.vectors_healer")


_connect_worker_hooks()
