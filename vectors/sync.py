"""Keep the vector store in step with PostgreSQL: the sync of pending chunks.

Each chunk's ``index_status`` is the truth: ``pending`` chunks are embedded (through a cache
keyed by model + content hash), upserted with their UUID as point id, and marked ``indexed``
only if their content did not change meanwhile. Every operation is an idempotent upsert or
delete, so running a sync twice, or after a crash, is always safe.

Failure is kept as small as its cause. An outage (embedder or store unreachable, bad credentials,
another model's collection) stops the sync and leaves chunks ``pending`` with the reason. A batch
the embedder or the store refuses is split in halves until the refused chunks are found; only
they are marked ``failed`` (reason kept) and retried later with backoff. Attempts are counted and
poisoned documents quarantined by ``vectors.quarantine``; ``vectors.alongside`` embeds while a
bulk command stores, ``vectors.foreground`` is the commands' end of it, ``vectors.repair`` the
drift check and the healer.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import OperationalError, connection
from django.utils import timezone
from psycopg import errors as psycopg_errors

from documents.models import Chunk
from documents.services import embedding_input
from ragsite.metrics import chunks_embedded
from ragsite.worker import raise_if_stopping
from vectors.embedders import EmbeddingAuthError, EmbeddingError, EmbeddingUnavailable, get_embedder
from vectors.models import EmbeddingCache
from vectors.quarantine import claim, documents_quarantine, isolated, unclaim
from vectors.stores import (
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
# Nothing will succeed until the outage or the configuration is fixed: stop, leave chunks pending.
OUTAGES = (EmbeddingAuthError, EmbeddingUnavailable, VectorStoreUnavailable, VectorStoreMismatch)


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
    cached, missing_hashes, missing_texts = cache_lookup(chunks, embedder)
    if missing_texts:
        vectors = embedder.embed_documents(missing_texts)
        cache_store(embedder, missing_hashes, missing_texts, vectors, cached)
    if report is not None:
        report.embedded += len(missing_texts)
        report.cache_hits += len(chunks) - len(missing_texts)
    return np.stack([cached[c.content_hash] for c in chunks])


def cache_lookup(chunks: list[Chunk], embedder, *, skip: Iterable[str] = ()) -> tuple[dict, list[str], list[str]]:
    """Cached vectors of the chunks, and the hashes and inputs still to embed (each once).

    Hashes in ``skip`` are neither looked up nor embedded: another batch is embedding them.
    """
    skip = set(skip)
    hashes = {c.content_hash for c in chunks} - skip
    cached = {
        row.content_hash: np.frombuffer(bytes(row.vector), dtype="<f4")
        for row in EmbeddingCache.objects.filter(model=embedder.model_id, content_hash__in=hashes)
        if row.dimension == embedder.dimension
    }
    missing_hashes: list[str] = []
    missing_texts: list[str] = []
    for chunk in chunks:
        digest = chunk.content_hash
        if digest not in cached and digest not in skip and digest not in missing_hashes:
            missing_hashes.append(digest)
            missing_texts.append(embedding_input(chunk, chunk.context))
    return cached, missing_hashes, missing_texts


def cache_store(embedder, missing_hashes: list[str], missing_texts: list[str], vectors, cached: dict) -> None:
    """Check the embedder's answer, write it to the cache and add it to ``cached``."""
    vectors = np.asarray(vectors, dtype=np.float32)
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
    chunks_embedded(len(missing_texts))
    cached.update(zip(missing_hashes, vectors, strict=True))


MARK_ATTEMPTS = 5


def mark(chunks: Iterable[Chunk], status: str, error: str = "") -> int:
    """Set the status of chunks whose content is still what we processed (one statement).

    The rows are locked in id order, the order in which document writers lock a document's
    chunks (documents.services._chunks_lock), so a sync and a writer never deadlock; should
    another statement still deadlock with it, the update is retried, not the sync failed.
    """
    chunks = list(chunks)
    if not chunks:
        return 0
    now = timezone.now()
    for attempt in range(1, MARK_ATTEMPTS + 1):
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    """
                    UPDATE documents_chunk AS c
                       SET index_status = %s, last_error = %s,
                           indexed_at = CASE WHEN %s = 'indexed' THEN %s ELSE c.indexed_at END,
                           sync_attempts = CASE WHEN %s = 'indexed' THEN 0 ELSE c.sync_attempts END,
                           sync_retry_at = CASE WHEN %s = 'failed'
                               THEN %s + LEAST(%s * power(2, GREATEST(c.sync_attempts - 1, 0)), %s) * interval '1 second'
                           END
                      FROM (SELECT l.id, l.content_hash
                              FROM documents_chunk AS l
                              JOIN unnest(%s::uuid[], %s::text[]) AS t(id, content_hash)
                                ON l.id = t.id AND l.content_hash = t.content_hash
                             ORDER BY l.id
                               FOR UPDATE OF l) AS locked
                     WHERE c.id = locked.id AND c.content_hash = locked.content_hash
                    """,
                    [
                        status,
                        error[:2000],
                        status,
                        now,
                        status,
                        status,
                        now,
                        settings.VECTORS_RETRY_INTERVAL,
                        settings.VECTORS_RETRY_MAX_INTERVAL,
                        [c.pk for c in chunks],
                        [c.content_hash for c in chunks],
                    ],
                )
                return cursor.rowcount
        except OperationalError as exc:
            if connection.in_atomic_block or attempt == MARK_ATTEMPTS or not _deadlock(exc):
                raise
            logger.warning("marking %d chunks %s deadlocked; retrying (%d)", len(chunks), status, attempt)
            time.sleep(0.05 * attempt)
    return 0


def _deadlock(exc: Exception) -> bool:
    return isinstance(exc.__cause__, psycopg_errors.DeadlockDetected | psycopg_errors.SerializationFailure)


def forget_vanished(store, batch: list[Chunk]) -> None:
    """Delete the points of chunks deleted while this batch was embedded and upserted.

    Their deletion's own point removal may have run before our upsert (another process or a
    request thread), and would leave the points behind with no chunk.
    """
    ids = [c.pk for c in batch]
    alive = set(Chunk.objects.filter(pk__in=ids).values_list("pk", flat=True))
    gone = [str(pk) for pk in ids if pk not in alive]
    if gone:
        store.delete(gone)


def lock_try() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [SYNC_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def lock_release() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [SYNC_LOCK_KEY])


def pending_chunks():
    return Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING)


def vectors_sync_pending(*, progress: Progress | None = None, batch_size: int = SYNC_BATCH) -> SyncReport:
    """Embed and upsert every pending chunk. Safe to call from many places at once."""
    report = SyncReport()
    while True:
        if not lock_try():
            # Another sync is running; it re-checks for pending chunks before it stops.
            report.skipped_locked = True
            return report
        try:
            _sync_locked(report, progress=progress, batch_size=batch_size)
        finally:
            lock_release()
        # Chunks committed while we held the lock may have had their own sync skipped.
        if report.stopped_by or not pending_chunks().exists():
            return report


# What a batch reads: the embedding input, the point payload, the status check and the attempts
# (vectors.quarantine reads them on every chunk: left out, each chunk cost a query of its own,
# ~6% of `manage.py ingest` of a text file with the local model; bench/formats_ingest_bench.py
# found it). Never the document's text: each chunk row carries its own copy of the joined document, so one batch of a
# 5 MB file held 256 copies of it (the worker went from 354 MB to 4.2 GB RSS).
_BATCH_FIELDS = (
    "id", "content_hash", "text", "context", "ordinal", "document_id", "sync_attempts",
    "document__id", "document__source_id", "document__title", "document__url", "document__metadata",
    "document__source__id", "document__source__name",
)  # fmt: skip


def next_batch(batch_size: int, *, exclude: set) -> list[Chunk]:
    """The oldest pending chunks, with what their point payload needs."""
    return list(
        pending_chunks()
        .exclude(pk__in=exclude)
        .select_related("document__source")
        .only(*_BATCH_FIELDS)
        .order_by("created_at", "id")[:batch_size]
    )


def upsert_batch(store, batch: list[Chunk], vectors) -> None:
    store.upsert(
        [
            VectorPoint(id=str(chunk.pk), vector=vector, payload=point_payload(chunk))
            for chunk, vector in zip(batch, vectors, strict=True)
        ]
    )


def stop(report: SyncReport, exc: Exception, chunks) -> None:
    """Nothing will succeed until someone fixes the configuration or the outage: stop, leave the
    chunks pending, and say why on each of them."""
    report.stopped_by = f"{type(exc).__name__}: {exc}"
    _mark_pending_error(chunks, report.stopped_by)
    logger.error("vector sync stopped: %s", report.stopped_by)


def _fail_batch(report: SyncReport, exc: Exception, batch: list[Chunk], seen_failed: set) -> None:
    """These chunks were refused (a bad input, a rejected point): mark them failed, go on."""
    message = f"{type(exc).__name__}: {exc}"
    report.failed += mark(batch, Chunk.IndexStatus.FAILED, message)
    report.errors.append(message)
    seen_failed.update(c.pk for c in batch)
    logger.warning("vector sync: %d chunks failed: %s", len(batch), message)
    worn = {c.document_id for c in batch if c.sync_attempts + 1 >= settings.VECTORS_SYNC_MAX_ATTEMPTS}
    if worn:
        documents_quarantine(worn)


def sync_part(
    store, part: list[Chunk], report: SyncReport, seen_failed: set, *, refused: Exception | None = None
) -> int:
    """Embed and upsert ``part``; a refused part is halved until the refused chunks are found.

    ``refused``: the caller already tried the whole part and got this error. Returns the chunks
    indexed. Outages propagate: they are nobody's fault and stop the sync. Halving re-embeds
    nothing that succeeded: vectors are cached before the upsert.
    """
    if refused is None:
        try:
            upsert_batch(store, part, embed_chunks(part, report))
        except OUTAGES:
            raise
        except (EmbeddingError, VectorStoreError) as exc:
            refused = exc
    if refused is not None:
        if len(part) == 1:
            _fail_batch(report, refused, part, seen_failed)
            return 0
        middle = len(part) // 2
        return sync_part(store, part[:middle], report, seen_failed) + sync_part(
            store, part[middle:], report, seen_failed
        )
    indexed = mark(part, Chunk.IndexStatus.INDEXED)
    report.indexed += indexed
    if indexed < len(part):
        forget_vanished(store, part)
    return indexed


def _sync_locked(report: SyncReport, *, progress: Progress | None, batch_size: int) -> None:
    embedder = get_embedder()
    store = get_vector_store()
    try:
        store.ensure_collection(dimension=embedder.dimension, model_id=embedder.model_id)
    except VectorStoreError as exc:
        stop(report, exc, pending_chunks())
        return
    seen_failed: set = set()
    while True:
        # A stopping worker hands its task back between batches; what is not embedded stays pending.
        raise_if_stopping()
        batch = next_batch(batch_size, exclude=seen_failed)
        if not batch:
            return
        started = time.perf_counter()
        for part in isolated(batch):
            part = claim(part)
            if not part:
                continue
            try:
                sync_part(store, part, report, seen_failed)
            except OUTAGES as exc:
                unclaim(part)
                stop(report, exc, part)
                return
            except (KeyboardInterrupt, SystemExit):
                with contextlib.suppress(Exception):  # a clean stop is not the document's fault
                    unclaim(part)
                raise
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
