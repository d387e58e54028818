"""Attempts and quarantine: a poisoned document cannot take its neighbours down or crash-loop the worker.

Each sync that takes a chunk without indexing it counts an attempt, written before the work so a
crash counts too; a chunk that already failed or crashed a sync is synced with its own document
only, so it cannot take its neighbours down, and a document that reaches
VECTORS_SYNC_MAX_ATTEMPTS is quarantined: its chunks are failed with a reason saying so and never
retried automatically until the document is re-ingested or re-embedded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from documents.models import Chunk

logger = logging.getLogger(__name__)

QUARANTINED = "quarantined"  # first word of a quarantined chunk's last_error


def claim(batch: list[Chunk]) -> list[Chunk]:
    """Count this attempt on the chunks before any work (committed: a crash counts too).

    Documents with a chunk that already used its attempts are quarantined and left out.
    """
    worn = {c.document_id for c in batch if c.sync_attempts >= settings.VECTORS_SYNC_MAX_ATTEMPTS}
    if worn:
        documents_quarantine(worn)
        batch = [c for c in batch if c.document_id not in worn]
    if batch:
        _update_in_id_order([c.pk for c in batch], sync_attempts=F("sync_attempts") + 1)
    return batch


def unclaim(batch: list[Chunk]) -> None:
    """An outage is nobody's fault: the attempt does not count against these chunks."""
    _update_in_id_order([c.pk for c in batch], sync_attempts=F("sync_attempts") - 1, floor=True)


def _update_in_id_order(ids: list, *, floor: bool = False, **fields) -> int:
    """Update these chunks after locking them in id order, the order every writer locks chunks in
    (documents.services): a plain ``UPDATE ... WHERE id IN`` locks in scan order and deadlocked
    beside a concurrent ingest of the same document."""
    if not ids:
        return 0
    with transaction.atomic():
        locked = Chunk.objects.select_for_update().filter(pk__in=ids).order_by("pk")
        if floor:
            locked = locked.filter(sync_attempts__gt=0)
        keys = list(locked.values_list("pk", flat=True))
        return Chunk.objects.filter(pk__in=keys).update(**fields)


def isolated(batch: list[Chunk]) -> list[list[Chunk]]:
    """The batch in parts: chunks never tried first, then each suspect document on its own.

    A chunk with attempts already failed or was in a sync that never finished (a crash): syncing
    its document alone keeps an innocent neighbour from sharing its attempts and its quarantine.
    """
    suspects: dict[int, int] = {}
    for c in batch:
        if c.sync_attempts > 0:
            suspects[c.document_id] = max(suspects.get(c.document_id, 0), c.sync_attempts)
    if not suspects:
        return [batch]
    parts = [[c for c in batch if c.document_id not in suspects]]
    # The least tried first: a neighbour caught in one crash gets done before the culprit again.
    for document_id in sorted(suspects, key=lambda pk: (suspects[pk], pk)):
        parts.append([c for c in batch if c.document_id == document_id])
    return [part for part in parts if part]


def quarantined_chunks():
    return Chunk.objects.filter(
        index_status=Chunk.IndexStatus.FAILED, sync_attempts__gte=settings.VECTORS_SYNC_MAX_ATTEMPTS
    )


def documents_quarantine(document_ids: Iterable[int]) -> int:
    """Fail every unindexed chunk of these documents for good (until re-ingested or re-embedded)."""
    limit = settings.VECTORS_SYNC_MAX_ATTEMPTS
    reason = (
        f"{QUARANTINED}: {limit} syncs in a row failed on this document or were cut short (a crash "
        "while embedding it counts); it is not retried automatically until it is re-ingested or re-embedded."
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE documents_chunk
               SET index_status = 'failed', sync_attempts = GREATEST(sync_attempts, %s), sync_retry_at = NULL,
                   last_error = left(%s || CASE WHEN last_error <> '' AND last_error NOT LIKE %s
                                                THEN ' Last error: ' || last_error ELSE '' END, 2000)
             WHERE document_id = ANY(%s) AND index_status <> 'indexed'
            """,
            [limit, reason, f"{QUARANTINED}%", sorted(set(document_ids))],
        )
        count = cursor.rowcount
    logger.error("vector sync: quarantined documents %s (%d chunks)", sorted(set(document_ids)), count)
    return count


def vectors_retry_failed(*, include_quarantined: bool = False, due_only: bool = True) -> int:
    """Failed chunks go back to pending: those whose backoff has passed (all with ``due_only``
    false); quarantined ones stay failed unless ``include_quarantined`` (their attempts restart)."""
    failed = Chunk.objects.filter(index_status=Chunk.IndexStatus.FAILED)
    if include_quarantined:
        failed.filter(sync_attempts__gte=settings.VECTORS_SYNC_MAX_ATTEMPTS).update(
            index_status=Chunk.IndexStatus.PENDING, sync_attempts=0, sync_retry_at=None, last_error=""
        )
    failed = failed.filter(sync_attempts__lt=settings.VECTORS_SYNC_MAX_ATTEMPTS)
    if due_only:
        failed = failed.filter(Q(sync_retry_at__isnull=True) | Q(sync_retry_at__lte=timezone.now()))
    return failed.update(index_status=Chunk.IndexStatus.PENDING)
