"""Keep Qdrant in step with PostgreSQL.

Each chunk's ``index_status`` is the truth: ``pending`` chunks are embedded (through a cache
keyed by model + content hash), upserted with their UUID as point id, and marked ``indexed``
only if their content did not change meanwhile. Every operation is an idempotent upsert or
delete, so running a sync twice, or after a crash, is always safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from documents.embeddings import EmbeddingAuthError, EmbeddingError, get_embedder
from documents.models import Chunk, EmbeddingCache
from documents.services import embedding_input
from documents.vectorstore import (
    VectorPoint,
    VectorStoreError,
    VectorStoreMismatch,
    VectorStoreUnavailable,
    get_vector_store,
)

logger = logging.getLogger(__name__)

SYNC_LOCK_KEY = 0x5A6C_0001  # pg advisory lock: one pending-chunk sync at a time per database
SYNC_BATCH = 256

Progress = Callable[[int], None]


@dataclass
class SyncReport:
    indexed: int = 0
    failed: int = 0
    embedded: int = 0
    cache_hits: int = 0
    skipped_locked: bool = False
    stopped_by: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.stopped_by and not self.errors


def point_payload(chunk: Chunk) -> dict:
    document = chunk.document
    return {
        "document_id": document.pk,
        "source_id": document.source_id,
        "source": document.source.name,
        "title": document.title,
        "url": document.url,
        "ordinal": chunk.ordinal,
        "metadata": document.metadata,
    }


def embed_chunks(chunks: list[Chunk], report: SyncReport | None = None) -> np.ndarray:
    """Vectors for the chunks, reusing cached ones; raises before storing anything partial."""
    embedder = get_embedder()
    hashes = [c.content_hash for c in chunks]
    cached = {
        row.content_hash: np.frombuffer(bytes(row.vector), dtype="<f4")
        for row in EmbeddingCache.objects.filter(model=embedder.model_id, content_hash__in=set(hashes))
        if row.dimension == embedder.dimension
    }
    missing_hashes: list[str] = []
    missing_texts: list[str] = []
    for chunk in chunks:
        if chunk.content_hash not in cached and chunk.content_hash not in missing_hashes:
            missing_hashes.append(chunk.content_hash)
            missing_texts.append(embedding_input(chunk, chunk.context))
    if missing_texts:
        vectors = np.asarray(embedder.embed_documents(missing_texts), dtype=np.float32)
        if vectors.shape != (len(missing_texts), embedder.dimension) or not np.all(np.isfinite(vectors)):
            raise EmbeddingError(
                f"The embedder returned vectors of shape {vectors.shape}; expected "
                f"({len(missing_texts)}, {embedder.dimension})."
            )
        EmbeddingCache.objects.bulk_create(
            [
                EmbeddingCache(
                    model=embedder.model_id,
                    content_hash=digest,
                    dimension=embedder.dimension,
                    vector=vector.astype("<f4").tobytes(),
                )
                for digest, vector in zip(missing_hashes, vectors, strict=True)
            ],
            ignore_conflicts=True,
        )
        cached.update(zip(missing_hashes, vectors, strict=True))
    if report is not None:
        report.embedded += len(missing_texts)
        report.cache_hits += len(chunks) - len(missing_texts)
    return np.stack([cached[c.content_hash] for c in chunks])


def _mark(chunks: Iterable[Chunk], status: str, error: str = "") -> int:
    """Set the status of chunks whose content is still what we processed (one statement)."""
    chunks = list(chunks)
    if not chunks:
        return 0
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE documents_chunk AS c
               SET index_status = %s, last_error = %s,
                   indexed_at = CASE WHEN %s = 'indexed' THEN %s ELSE c.indexed_at END
              FROM unnest(%s::uuid[], %s::text[]) AS t(id, content_hash)
             WHERE c.id = t.id AND c.content_hash = t.content_hash
            """,
            [status, error[:2000], status, now, [c.pk for c in chunks], [c.content_hash for c in chunks]],
        )
        return cursor.rowcount


def _try_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [SYNC_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _unlock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [SYNC_LOCK_KEY])


def pending_chunks():
    return Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING)


def vectors_sync_pending(*, progress: Progress | None = None, batch_size: int = SYNC_BATCH) -> SyncReport:
    """Embed and upsert every pending chunk. Safe to call from many places at once."""
    report = SyncReport()
    while True:
        if not _try_lock():
            # Another sync is running; it re-checks for pending chunks before it stops.
            report.skipped_locked = True
            return report
        try:
            _sync_locked(report, progress=progress, batch_size=batch_size)
        finally:
            _unlock()
        # Chunks committed while we held the lock may have had their own sync skipped.
        if report.stopped_by or not pending_chunks().exists():
            return report


def _sync_locked(report: SyncReport, *, progress: Progress | None, batch_size: int) -> None:
    embedder = get_embedder()
    store = get_vector_store()
    try:
        store.ensure_collection(dimension=embedder.dimension, model_id=embedder.model_id)
    except VectorStoreError as exc:
        report.stopped_by = f"{type(exc).__name__}: {exc}"
        _mark_pending_error(pending_chunks(), report.stopped_by)
        logger.error("vector sync stopped: %s", report.stopped_by)
        return
    seen_failed: set = set()
    while True:
        batch = list(
            pending_chunks()
            .exclude(pk__in=seen_failed)
            .select_related("document__source")
            .order_by("created_at", "id")[:batch_size]
        )
        if not batch:
            return
        started = time.perf_counter()
        try:
            vectors = embed_chunks(batch, report)
            store.upsert(
                [
                    VectorPoint(id=str(chunk.pk), vector=vector, payload=point_payload(chunk))
                    for chunk, vector in zip(batch, vectors, strict=True)
                ]
            )
        except (EmbeddingAuthError, VectorStoreUnavailable, VectorStoreMismatch) as exc:
            # Nothing will succeed until someone fixes the configuration or the outage: stop,
            # leave the chunks pending, and say why on each of them.
            report.stopped_by = f"{type(exc).__name__}: {exc}"
            _mark_pending_error(batch, report.stopped_by)
            logger.error("vector sync stopped: %s", report.stopped_by)
            return
        except (EmbeddingError, VectorStoreError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            report.failed += _mark(batch, Chunk.IndexStatus.FAILED, message)
            report.errors.append(message)
            seen_failed.update(c.pk for c in batch)
            logger.warning("vector sync batch failed: %s", message)
            continue
        report.indexed += _mark(batch, Chunk.IndexStatus.INDEXED)
        logger.debug("synced %d chunks in %.2fs", len(batch), time.perf_counter() - started)
        if progress:
            progress(len(batch))


def _mark_pending_error(chunks, message: str) -> None:
    ids = [c.pk for c in chunks] if isinstance(chunks, list) else None
    qs = Chunk.objects.filter(pk__in=ids) if ids is not None else chunks
    qs.filter(index_status=Chunk.IndexStatus.PENDING).update(last_error=message[:2000])


def vectors_delete(chunk_ids: list[str]) -> None:
    if chunk_ids:
        get_vector_store().delete([str(i) for i in chunk_ids])


@dataclass
class RepairReport:
    requeued_failed: int = 0
    missing_points: int = 0
    orphan_points: int = 0
    pending_before: int = 0
    sync: SyncReport | None = None


def vectors_repair(*, fix: bool = True, progress: Callable[[str], None] | None = None) -> RepairReport:
    """Find drift between PostgreSQL and Qdrant and (optionally) repair it."""
    say = progress or (lambda message: None)
    store = get_vector_store()
    embedder = get_embedder()
    store.ensure_collection(dimension=embedder.dimension, model_id=embedder.model_id)
    report = RepairReport()
    report.pending_before = pending_chunks().count()
    failed = Chunk.objects.filter(index_status=Chunk.IndexStatus.FAILED)
    report.requeued_failed = failed.count()

    point_ids: set[str] = set()
    for ids in store.iter_ids(batch_size=2000):
        point_ids.update(ids)
    say(f"{len(point_ids)} points in the vector store")

    orphans: list[str] = []
    ids_list = list(point_ids)
    for start in range(0, len(ids_list), 5000):
        window = ids_list[start : start + 5000]
        known = {str(pk) for pk in Chunk.objects.filter(pk__in=window).values_list("pk", flat=True)}
        orphans.extend(i for i in window if i not in known)
    report.orphan_points = len(orphans)

    missing: list = []
    for pk in Chunk.objects.filter(index_status=Chunk.IndexStatus.INDEXED).values_list("pk", flat=True).iterator(
        chunk_size=5000
    ):
        if str(pk) not in point_ids:
            missing.append(pk)
    report.missing_points = len(missing)

    if fix:
        with transaction.atomic():
            failed.update(index_status=Chunk.IndexStatus.PENDING, last_error="")
            for start in range(0, len(missing), 5000):
                Chunk.objects.filter(pk__in=missing[start : start + 5000]).update(
                    index_status=Chunk.IndexStatus.PENDING
                )
        for start in range(0, len(orphans), 1000):
            store.delete(orphans[start : start + 1000])
    return report
