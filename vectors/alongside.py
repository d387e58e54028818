"""Embedding while a bulk command stores: ``SyncAlongside`` (used by ``vectors.foreground``)."""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from documents.models import Chunk
from vectors.embedders import EmbeddingError, get_embedder
from vectors.quarantine import claim, unclaim
from vectors.stores import VectorStoreError, get_vector_store
from vectors.sync import (
    OUTAGES,
    SYNC_BATCH,
    Progress,
    SyncReport,
    cache_lookup,
    cache_store,
    embed_chunks,
    forget_vanished,
    lock_release,
    lock_try,
    mark,
    next_batch,
    pending_chunks,
    stop,
    sync_part,
    upsert_batch,
    vectors_sync_pending,
)


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
        if not lock_try():
            self.report.skipped_locked = True
            return False
        self._locked = True
        self._embedder = get_embedder()
        self._store = get_vector_store()
        try:
            self._store.ensure_collection(dimension=self._embedder.dimension, model_id=self._embedder.model_id)
        except VectorStoreError as exc:
            stop(self.report, exc, pending_chunks())
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
                unclaim([c for f in self._flights for c in f.batch])
            self._abort_flights()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._locked:
            self._locked = False
            self._locked_once = True
            lock_release()

    def _launch(self) -> bool:
        busy = {c.pk for f in self._flights for c in f.batch}
        self._new_since_fetch = max(0, self._new_since_fetch - self.batch_size)
        batch: list[Chunk] = []
        while not batch:
            fetched = next_batch(self.batch_size, exclude=self._seen_failed | busy)
            if not fetched:
                return False
            # Chunks that failed or crashed a sync before are left to finish()'s sync, which
            # takes each such document on its own.
            self._seen_failed.update(c.pk for c in fetched if c.sync_attempts > 0)
            batch = claim([c for c in fetched if c.sync_attempts == 0])
        embedding = {h for f in self._flights for h in f.missing_hashes}
        cached, missing_hashes, missing_texts = cache_lookup(batch, self._embedder, skip=embedding)
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
                cache_store(self._embedder, flight.missing_hashes, flight.missing_texts, vectors, flight.cached)
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
            upsert_batch(self._store, batch, [flight.cached[chunk.content_hash] for chunk in batch])
        except OUTAGES as exc:
            self._outage(exc, batch)
            return
        except (EmbeddingError, VectorStoreError) as exc:
            self._recent = {}
            try:
                indexed = sync_part(self._store, batch, self.report, self._seen_failed, refused=exc)
            except OUTAGES as outage:
                self._outage(outage, batch)
                return
            if self.progress and indexed:
                self.progress(indexed)
            return
        marked = mark(batch, Chunk.IndexStatus.INDEXED)
        self.report.indexed += marked
        if marked < len(batch):
            forget_vanished(self._store, batch)
        self.report.embedded += len(flight.missing_texts)
        self.report.cache_hits += len(batch) - len(flight.missing_texts)
        if self.progress:
            self.progress(len(batch))

    def _outage(self, exc: Exception, batch: list[Chunk]) -> None:
        waiting = [c for f in self._flights for c in f.batch]
        self._abort_flights()
        unclaim(batch + waiting)
        stop(self.report, exc, batch + waiting)

    def _abort_flights(self) -> None:
        for flight in self._flights:
            flight.future.cancel()
        self._flights.clear()
