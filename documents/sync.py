"""Keep Qdrant in step with PostgreSQL.

Each chunk's ``index_status`` is the truth: ``pending`` chunks are embedded (through a cache
keyed by model + content hash), upserted with their UUID as point id, and marked ``indexed``
only if their content did not change meanwhile. Every operation is an idempotent upsert or
delete, so running a sync twice, or after a crash, is always safe.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
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
    cached.update(zip(missing_hashes, vectors, strict=True))


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
    """This batch failed (a bad input, a rejected upsert): mark it failed and go on with the rest."""
    message = f"{type(exc).__name__}: {exc}"
    report.failed += _mark(batch, Chunk.IndexStatus.FAILED, message)
    report.errors.append(message)
    seen_failed.update(c.pk for c in batch)
    logger.warning("vector sync batch failed: %s", message)


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
        batch = _next_batch(batch_size, exclude=seen_failed)
        if not batch:
            return
        started = time.perf_counter()
        try:
            _upsert_batch(store, batch, embed_chunks(batch, report))
        except (EmbeddingAuthError, VectorStoreUnavailable, VectorStoreMismatch) as exc:
            _stop(report, exc, batch)
            return
        except (EmbeddingError, VectorStoreError) as exc:
            _fail_batch(report, exc, batch, seen_failed)
            continue
        report.indexed += _mark(batch, Chunk.IndexStatus.INDEXED)
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
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._locked:
            self._locked = False
            self._locked_once = True
            _unlock()

    def _launch(self) -> bool:
        busy = {c.pk for f in self._flights for c in f.batch}
        batch = _next_batch(self.batch_size, exclude=self._seen_failed | busy)
        self._new_since_fetch = max(0, self._new_since_fetch - self.batch_size)
        if not batch:
            return False
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
            self._recent = dict(zip(flight.missing_hashes, (flight.cached[h] for h in flight.missing_hashes), strict=True))
            _upsert_batch(self._store, batch, [flight.cached[chunk.content_hash] for chunk in batch])
        except (EmbeddingAuthError, VectorStoreUnavailable, VectorStoreMismatch) as exc:
            waiting = [c for f in self._flights for c in f.batch]
            self._abort_flights()
            _stop(self.report, exc, batch + waiting)
            return
        except (EmbeddingError, VectorStoreError) as exc:
            _fail_batch(self.report, exc, batch, self._seen_failed)
            self._recent = {}
            return
        self.report.indexed += _mark(batch, Chunk.IndexStatus.INDEXED)
        self.report.embedded += len(flight.missing_texts)
        self.report.cache_hits += len(batch) - len(flight.missing_texts)
        if self.progress:
            self.progress(len(batch))

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
