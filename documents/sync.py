"""Keep Qdrant in step with PostgreSQL.

Each chunk's ``index_status`` is the truth: ``pending`` chunks are embedded (through a cache
keyed by model + content hash), upserted with their UUID as point id, and marked ``indexed``
only if their content did not change meanwhile. Every operation is an idempotent upsert or
delete, so running a sync twice, or after a crash, is always safe.

Failure is kept as small as its cause. An outage (embedder or store unreachable, bad credentials,
another model's collection) stops the sync and leaves chunks ``pending`` with the reason. A batch
the embedder or the store refuses is split in halves until the refused chunks are found; only
they are marked ``failed`` (reason kept) and retried later with backoff. Each sync that takes a
chunk without indexing it counts an attempt, written before the work so a crash counts too; a
chunk that already failed or crashed a sync is synced with its own document only, so it cannot
take its neighbours down, and a document that reaches VECTORS_SYNC_MAX_ATTEMPTS is quarantined:
its chunks are failed with a reason saying so and never retried automatically until the
document is re-ingested or re-embedded (so a poisoned document cannot crash-loop the worker).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import OperationalError, connection
from django.db.models import F, Q
from django.utils import timezone
from psycopg import errors as psycopg_errors

from documents.embeddings import EmbeddingAuthError, EmbeddingError, EmbeddingUnavailable, get_embedder
from documents.models import Chunk, EmbeddingCache
from documents.services import embedding_input
from documents.vectorstore import (
    VectorPoint,
    VectorStoreError,
    VectorStoreMismatch,
    VectorStoreUnavailable,
    get_vector_store,
)
from ragsite.metrics import chunks_embedded
from ragsite.worker import raise_if_stopping

logger = logging.getLogger(__name__)

SYNC_LOCK_KEY = 0x5A6C_0001  # pg advisory lock: one pending-chunk sync at a time per database
SYNC_BATCH = 256

Progress = Callable[[int], None]
# Nothing will succeed until the outage or the configuration is fixed: stop, leave chunks pending.
OUTAGES = (EmbeddingAuthError, EmbeddingUnavailable, VectorStoreUnavailable, VectorStoreMismatch)
QUARANTINED = "quarantined"  # first word of a quarantined chunk's last_error


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
    cached, missing_hashes, missing_texts = _cache_lookup(chunks, embedder)
    if missing_texts:
        vectors = embedder.embed_documents(missing_texts)
        _cache_store(embedder, missing_hashes, missing_texts, vectors, cached)
    if report is not None:
        report.embedded += len(missing_texts)
        report.cache_hits += len(chunks) - len(missing_texts)
    return np.stack([cached[c.content_hash] for c in chunks])


def _cache_lookup(chunks: list[Chunk], embedder, *, skip: Iterable[str] = ()) -> tuple[dict, list[str], list[str]]:
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


def _cache_store(embedder, missing_hashes: list[str], missing_texts: list[str], vectors, cached: dict) -> None:
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


def _mark(chunks: Iterable[Chunk], status: str, error: str = "") -> int:
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


def _forget_vanished(store, batch: list[Chunk]) -> None:
    """Delete the points of chunks deleted while this batch was embedded and upserted.

    Their deletion's own point removal may have run before our upsert (another process or a
    request thread), and would leave the points behind with no chunk.
    """
    ids = [c.pk for c in batch]
    alive = set(Chunk.objects.filter(pk__in=ids).values_list("pk", flat=True))
    gone = [str(pk) for pk in ids if pk not in alive]
    if gone:
        store.delete(gone)


def _claim(batch: list[Chunk]) -> list[Chunk]:
    """Count this attempt on the chunks before any work (committed: a crash counts too).

    Documents with a chunk that already used its attempts are quarantined and left out.
    """
    worn = {c.document_id for c in batch if c.sync_attempts >= settings.VECTORS_SYNC_MAX_ATTEMPTS}
    if worn:
        documents_quarantine(worn)
        batch = [c for c in batch if c.document_id not in worn]
    if batch:
        Chunk.objects.filter(pk__in=[c.pk for c in batch]).update(sync_attempts=F("sync_attempts") + 1)
    return batch


def _unclaim(batch: list[Chunk]) -> None:
    """An outage is nobody's fault: the attempt does not count against these chunks."""
    Chunk.objects.filter(pk__in=[c.pk for c in batch], sync_attempts__gt=0).update(sync_attempts=F("sync_attempts") - 1)


def _isolated(batch: list[Chunk]) -> list[list[Chunk]]:
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


# What a batch reads: the embedding input, the point payload and the status check. Never the
# document's text: each chunk row carries its own copy of the joined document, so one batch of a
# 5 MB file held 256 copies of it (the worker went from 354 MB to 4.2 GB RSS).
_BATCH_FIELDS = (
    "id", "content_hash", "text", "context", "ordinal", "document_id",
    "document__id", "document__source_id", "document__title", "document__url", "document__metadata",
    "document__source__id", "document__source__name",
)  # fmt: skip


def _next_batch(batch_size: int, *, exclude: set) -> list[Chunk]:
    """The oldest pending chunks, with what their point payload needs."""
    return list(
        pending_chunks()
        .exclude(pk__in=exclude)
        .select_related("document__source")
        .only(*_BATCH_FIELDS)
        .order_by("created_at", "id")[:batch_size]
    )


def _upsert_batch(store, batch: list[Chunk], vectors) -> None:
    store.upsert(
        [
            VectorPoint(id=str(chunk.pk), vector=vector, payload=point_payload(chunk))
            for chunk, vector in zip(batch, vectors, strict=True)
        ]
    )


def _stop(report: SyncReport, exc: Exception, chunks) -> None:
    """Nothing will succeed until someone fixes the configuration or the outage: stop, leave the
    chunks pending, and say why on each of them."""
    report.stopped_by = f"{type(exc).__name__}: {exc}"
    _mark_pending_error(chunks, report.stopped_by)
    logger.error("vector sync stopped: %s", report.stopped_by)


def _fail_batch(report: SyncReport, exc: Exception, batch: list[Chunk], seen_failed: set) -> None:
    """These chunks were refused (a bad input, a rejected point): mark them failed, go on."""
    message = f"{type(exc).__name__}: {exc}"
    report.failed += _mark(batch, Chunk.IndexStatus.FAILED, message)
    report.errors.append(message)
    seen_failed.update(c.pk for c in batch)
    logger.warning("vector sync: %d chunks failed: %s", len(batch), message)
    worn = {c.document_id for c in batch if c.sync_attempts + 1 >= settings.VECTORS_SYNC_MAX_ATTEMPTS}
    if worn:
        documents_quarantine(worn)


def _sync_part(
    store, part: list[Chunk], report: SyncReport, seen_failed: set, *, refused: Exception | None = None
) -> int:
    """Embed and upsert ``part``; a refused part is halved until the refused chunks are found.

    ``refused``: the caller already tried the whole part and got this error. Returns the chunks
    indexed. Outages propagate: they are nobody's fault and stop the sync. Halving re-embeds
    nothing that succeeded: vectors are cached before the upsert.
    """
    if refused is None:
        try:
            _upsert_batch(store, part, embed_chunks(part, report))
        except OUTAGES:
            raise
        except (EmbeddingError, VectorStoreError) as exc:
            refused = exc
    if refused is not None:
        if len(part) == 1:
            _fail_batch(report, refused, part, seen_failed)
            return 0
        middle = len(part) // 2
        return _sync_part(store, part[:middle], report, seen_failed) + _sync_part(
            store, part[middle:], report, seen_failed
        )
    indexed = _mark(part, Chunk.IndexStatus.INDEXED)
    report.indexed += indexed
    if indexed < len(part):
        _forget_vanished(store, part)
    return indexed


def _sync_locked(report: SyncReport, *, progress: Progress | None, batch_size: int) -> None:
    embedder = get_embedder()
    store = get_vector_store()
    try:
        store.ensure_collection(dimension=embedder.dimension, model_id=embedder.model_id)
    except VectorStoreError as exc:
        _stop(report, exc, pending_chunks())
        return
    seen_failed: set = set()
    while True:
        # A stopping worker hands its task back between batches; what is not embedded stays pending.
        raise_if_stopping()
        batch = _next_batch(batch_size, exclude=seen_failed)
        if not batch:
            return
        started = time.perf_counter()
        for part in _isolated(batch):
            part = _claim(part)
            if not part:
                continue
            try:
                _sync_part(store, part, report, seen_failed)
            except OUTAGES as exc:
                _unclaim(part)
                _stop(report, exc, part)
                return
            except (KeyboardInterrupt, SystemExit):
                with contextlib.suppress(Exception):  # a clean stop is not the document's fault
                    _unclaim(part)
                raise
        logger.debug("synced %d chunks in %.2fs", len(batch), time.perf_counter() - started)
        if progress:
            progress(len(batch))


@dataclass
class _Flight:
    """One batch whose new inputs are with the embedding thread."""

    batch: list[Chunk]
    cached: dict
    missing_hashes: list[str]
    missing_texts: list[str]
    borrowed: set[str]  # hashes an earlier flight is embedding
    future: Future


class SyncAlongside:
    """Embed and upsert pending chunks while the caller goes on storing documents.

    For bulk commands (``manage.py ingest``): the caller stores documents in this thread and
    calls ``stored(chunks_added)`` after each. Once a full batch is pending, its chunks are read
    and their new inputs handed to one embedding thread; a later ``stored`` call that finds them
    done writes the cache, upserts the points and marks the chunks. So the embedder (ONNX
    Runtime's own threads outside the GIL, or a remote API) computes while this thread parses,
    chunks and writes, instead of after it; and it computes batch n+1 while this thread writes
    batch n. Every database statement stays in the caller's thread, on its connection (and, in
    tests, inside its transaction); only ``embedder.embed_documents`` runs in the other thread.

    The guarantees are ``vectors_sync_pending``'s: one sync at a time (the advisory lock, held
    from ``start`` to ``finish``), the embedding cache, and a chunk is marked indexed only if its
    content is still what was embedded. A crash or an interrupt leaves the chunks pending; the
    next sync embeds them. Call ``finish`` (embeds the rest, releases the lock) in any case.
    """

    MAX_IN_FLIGHT = 2  # one computing, one queued behind it: the embedder never waits for us

    def __init__(self, *, batch_size: int = SYNC_BATCH) -> None:
        self.report = SyncReport()
        self.batch_size = batch_size
        self.progress: Progress | None = None
        self._locked = False
        self._executor: ThreadPoolExecutor | None = None
        self._flights: deque[_Flight] = deque()
        self._new_since_fetch = 0
        self._seen_failed: set = set()
        self._recent: dict[str, np.ndarray] = {}  # vectors the last completed flight embedded
        self._embedder = None
        self._store = None

    @property
    def active(self) -> bool:
        return self._locked and not self.report.stopped_by

    def start(self) -> bool:
        """Take the sync lock and check the collection; False if another sync runs or the store fails."""
        if not _try_lock():
            self.report.skipped_locked = True
            return False
        self._locked = True
        self._embedder = get_embedder()
        self._store = get_vector_store()
        try:
            self._store.ensure_collection(dimension=self._embedder.dimension, model_id=self._embedder.model_id)
        except VectorStoreError as exc:
            _stop(self.report, exc, pending_chunks())
            self._release()
            return False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragsite-embed")
        return True

    def stored(self, chunks_added: int) -> None:
        """The caller committed a document with this many new chunks; never waits for the embedder."""
        if not self.active:
            return
        self._new_since_fetch += chunks_added
        while self._flights and self._flights[0].future.done():
            self._complete(self._flights.popleft())
        while self.active and len(self._flights) < self.MAX_IN_FLIGHT and self._new_since_fetch >= self.batch_size:
            if not self._launch():
                break

    def finish(self, *, progress: Progress | None = None) -> SyncReport:
        """Embed every pending chunk, release the lock; then sync what others committed meanwhile."""
        if progress is not None:
            self.progress = progress
        try:
            while self.active:
                while self.active and len(self._flights) < self.MAX_IN_FLIGHT and self._launch():
                    pass
                if not self._flights:
                    break
                self._complete(self._flights.popleft())
        finally:
            self._release()
        if self._locked_once and not self.report.stopped_by and pending_chunks().exists():
            # Chunks committed by other processes while we held the lock had their own sync skipped.
            more = vectors_sync_pending(progress=self.progress, batch_size=self.batch_size)
            for name in ("indexed", "failed", "embedded", "cache_hits"):
                setattr(self.report, name, getattr(self.report, name) + getattr(more, name))
            self.report.stopped_by = more.stopped_by
            self.report.errors += more.errors
        return self.report

    def abort(self) -> None:
        """Stop without embedding more (an interrupt): batches in flight stay pending."""
        self._abort_flights()
        self._release()

    # --- internals ---

    _locked_once = False

    def _release(self) -> None:
        if self._flights:  # interrupted (Ctrl-C): a clean stop is not the documents' fault
            with contextlib.suppress(Exception):
                _unclaim([c for f in self._flights for c in f.batch])
            self._abort_flights()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._locked:
            self._locked = False
            self._locked_once = True
            _unlock()

    def _launch(self) -> bool:
        busy = {c.pk for f in self._flights for c in f.batch}
        self._new_since_fetch = max(0, self._new_since_fetch - self.batch_size)
        batch: list[Chunk] = []
        while not batch:
            fetched = _next_batch(self.batch_size, exclude=self._seen_failed | busy)
            if not fetched:
                return False
            # Chunks that failed or crashed a sync before are left to finish()'s sync, which
            # takes each such document on its own.
            self._seen_failed.update(c.pk for c in fetched if c.sync_attempts > 0)
            batch = _claim([c for c in fetched if c.sync_attempts == 0])
        embedding = {h for f in self._flights for h in f.missing_hashes}
        cached, missing_hashes, missing_texts = _cache_lookup(batch, self._embedder, skip=embedding)
        if missing_texts:
            future = self._executor.submit(self._embedder.embed_documents, missing_texts)
        else:
            future = Future()
            future.set_result(np.empty((0, self._embedder.dimension), dtype=np.float32))
        borrowed = {c.content_hash for c in batch} & embedding
        self._flights.append(_Flight(batch, cached, missing_hashes, missing_texts, borrowed, future))
        return True

    def _complete(self, flight: _Flight) -> None:
        batch = flight.batch
        try:
            vectors = flight.future.result()
            if flight.missing_texts:
                _cache_store(self._embedder, flight.missing_hashes, flight.missing_texts, vectors, flight.cached)
            for digest in flight.borrowed:
                if digest in self._recent:
                    flight.cached[digest] = self._recent[digest]
            if any(c.content_hash not in flight.cached for c in batch):
                # The flight that was embedding them failed: embed them here, through the cache.
                late = [c for c in batch if c.content_hash not in flight.cached]
                flight.cached.update(zip((c.content_hash for c in late), embed_chunks(late), strict=True))
            self._recent = dict(
                zip(flight.missing_hashes, (flight.cached[h] for h in flight.missing_hashes), strict=True)
            )
            _upsert_batch(self._store, batch, [flight.cached[chunk.content_hash] for chunk in batch])
        except OUTAGES as exc:
            self._outage(exc, batch)
            return
        except (EmbeddingError, VectorStoreError) as exc:
            self._recent = {}
            try:
                indexed = _sync_part(self._store, batch, self.report, self._seen_failed, refused=exc)
            except OUTAGES as outage:
                self._outage(outage, batch)
                return
            if self.progress and indexed:
                self.progress(indexed)
            return
        marked = _mark(batch, Chunk.IndexStatus.INDEXED)
        self.report.indexed += marked
        if marked < len(batch):
            _forget_vanished(self._store, batch)
        self.report.embedded += len(flight.missing_texts)
        self.report.cache_hits += len(batch) - len(flight.missing_texts)
        if self.progress:
            self.progress(len(batch))

    def _outage(self, exc: Exception, batch: list[Chunk]) -> None:
        waiting = [c for f in self._flights for c in f.batch]
        self._abort_flights()
        _unclaim(batch + waiting)
        _stop(self.report, exc, batch + waiting)

    def _abort_flights(self) -> None:
        for flight in self._flights:
            flight.future.cancel()
        self._flights.clear()


def embed_pending_foreground(
    stdout, stderr, *, alongside: SyncAlongside | None = None, progress_bar=None
) -> SyncReport | None:
    """The end of a bulk command (`ingest`, `crawl`): embed what is pending, with a progress bar.

    ``alongside`` is the command's ``SyncAlongside`` if it embedded while storing. If the vector
    store is unreachable, a sync is queued for the worker instead. Writes one summary line.
    """
    if progress_bar is None:
        from documents.management.commands._progress import progress_bar
    if alongside is not None and not alongside.active:
        # It never got the lock (another sync was running) or it stopped (an outage, a bad key):
        # try once more now, as the command did before it embedded alongside.
        alongside.finish()
        alongside = None
    pending = pending_chunks().count()
    if alongside is not None and not pending:
        return _report_foreground(stdout, stderr, alongside.finish())
    if alongside is None:
        if not pending:
            return None
        try:
            get_vector_store().health()
        except VectorStoreError as exc:
            from documents.signals import enqueue_vector_sync

            enqueue_vector_sync()
            stdout.write(f"{pending} chunks are queued for embedding; the running worker will index them ({exc})")
            return None
    with progress_bar(pending, "embed", "chunk") as bar:
        if alongside is None:
            report = vectors_sync_pending(progress=bar.update)
        else:
            report = alongside.finish(progress=bar.update)
    return _report_foreground(stdout, stderr, report)


def embeds_alongside() -> bool:
    """Whether bulk commands should embed while they store: only with a remote embedder.

    Storing is CPU work, not waiting: in the commands' batches (``document_ingest_many``) ~0.9 ms
    of Python and ~0.6 ms of PostgreSQL backend per SciFact document (~4 + 3 ms one by one). A
    local model already keeps every core busy (ONNX Runtime, one thread per core), so overlapping
    takes that CPU from the embedder instead of hiding idle time. On the 2 shared cores of
    bench/results/ingest.md it was no clear win: under heavy load from other jobs, one run had the
    overlapped pipeline at 0.768x the raw embedder vs 0.813x for store-then-embed, the next 0.983x
    vs 0.885x; on a quiet machine with batched storing 0.948x vs 0.937x, for more CPU. So the
    simpler order stays the default. A remote API leaves the cores to storing.
    """
    from django.conf import settings

    return settings.EMBEDDING_BACKEND != "local"


def sync_alongside_start() -> SyncAlongside | None:
    """A started ``SyncAlongside`` for a bulk command, or None if the vector store is unreachable
    (the command then queues a sync for the worker at the end, as before)."""
    try:
        get_vector_store().health()
    except VectorStoreError:
        return None
    alongside = SyncAlongside()
    alongside.start()
    return alongside


def _report_foreground(stdout, stderr, report: SyncReport) -> SyncReport:
    if report.skipped_locked:
        stdout.write("another process is already embedding; it will index the new chunks")
    elif report.stopped_by:
        stderr.write(f"embedding stopped: {report.stopped_by}; chunks stay pending (run vectors_sync later)")
    else:
        failed = Chunk.objects.filter(index_status=Chunk.IndexStatus.FAILED).count()
        stdout.write(f"embedded {report.indexed} chunks ({report.cache_hits} from cache); {failed} failed")
    return report


def _mark_pending_error(chunks, message: str) -> None:
    ids = [c.pk for c in chunks] if isinstance(chunks, list) else None
    qs = Chunk.objects.filter(pk__in=ids) if ids is not None else chunks
    qs.filter(index_status=Chunk.IndexStatus.PENDING).update(last_error=message[:2000])


def vectors_delete(chunk_ids: list[str]) -> None:
    if chunk_ids:
        get_vector_store().delete([str(i) for i in chunk_ids])
