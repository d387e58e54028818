"""Repair without an operator: the drift check and the loop that heals the vector index.

The drift check (``manage.py vectors_sync``, and periodically the process that owns the vector
store) finds chunks left pending or failed, points with no chunk row (a kill -9 between a
delete's commit and its point removal), indexed chunks with no point, and documents whose chunks
do not hold their text (two writers racing); it repairs each. ``VectorsHealer`` runs in the
task worker's process: it retries pending and failed chunks with backoff, so the index heals
by itself once an outage ends, and runs the drift check every VECTORS_DRIFT_INTERVAL seconds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from documents.models import Chunk, Document
from vectors.embedders import get_embedder
from vectors.quarantine import quarantined_chunks, vectors_retry_failed
from vectors.stores import get_vector_store
from vectors.sync import SyncReport, pending_chunks, vectors_sync_pending

logger = logging.getLogger(__name__)


@dataclass
class RepairReport:
    requeued_failed: int = 0
    missing_points: int = 0
    orphan_points: int = 0
    pending_before: int = 0
    quarantined: int = 0
    mismatched_documents: list[int] = field(default_factory=list)
    sync: SyncReport | None = None


# Documents whose texts together stay under this are compared in one round trip.
_DRIFT_BATCH_CHARS = 32 * 1024 * 1024
_DRIFT_BATCH_DOCUMENTS = 500


def documents_mismatched(*, since=None) -> list[int]:
    """Documents whose chunks do not hold their text (``since``: only those updated from then on).

    Each chunk must be its span of the document's text (``text[char_start:char_end]``, the
    chunker's contract) and no words may follow the last chunk; a document with words has
    chunks. Two writers racing can leave a document's text from one and its chunks from the
    other, and re-posting the same content is then a no-op. Texts are read once each, in
    batches bounded in characters, and compared with md5 sums of the chunk texts.
    """
    from django.db.models.functions import Length

    from documents.models import Document

    documents = Document.objects.filter(status=Document.Status.ACTIVE)
    if since is not None:
        documents = documents.filter(updated_at__gte=since)
    mismatched: list[int] = []
    group: list[int] = []
    size = 0
    sized = documents.annotate(_length=Length("text")).order_by("pk").values_list("pk", "_length")
    for pk, length in sized.iterator(chunk_size=5000):
        if group and (size + length > _DRIFT_BATCH_CHARS or len(group) >= _DRIFT_BATCH_DOCUMENTS):
            mismatched.extend(_mismatched_in(group))
            group, size = [], 0
        group.append(pk)
        size += length
    if group:
        mismatched.extend(_mismatched_in(group))
    return mismatched


def _mismatched_in(document_ids: list[int]) -> list[int]:
    from django.db.models.functions import MD5

    spans: dict[int, list[tuple[int, int, str]]] = {pk: [] for pk in document_ids}
    rows = Chunk.objects.filter(document_id__in=document_ids).annotate(_md5=MD5("text"))
    for document_id, start, end, digest in rows.values_list("document_id", "char_start", "char_end", "_md5"):
        spans[document_id].append((start, end, digest))
    out = []
    for pk, text in Document.objects.filter(pk__in=document_ids).values_list("pk", "text"):
        chunks = spans[pk]
        end = max((e for _, e, _ in chunks), default=0)
        if any(ch.isalnum() for ch in text[end:]) or any(
            hashlib.md5(text[s:e].encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest() != digest
            for s, e, digest in chunks
        ):
            out.append(pk)
    return out


def documents_rechunk(document_ids: list[int]) -> int:
    """Re-chunk each document from its stored text if it still does not match; returns how many."""
    from documents.parsers import ParseError
    from documents.services import document_rechunk

    repaired = 0
    for pk in document_ids:
        if not _mismatched_in([pk]):  # a writer fixed it meanwhile
            continue
        try:
            document_rechunk(document=Document(pk=pk))
        except Document.DoesNotExist:
            continue
        except ParseError as exc:
            logger.warning("drift repair: document %s cannot be re-chunked: %s", pk, exc)
            continue
        repaired += 1
        logger.warning("drift repair: document %s had chunks that did not match its text; re-chunked", pk)
    return repaired


def vectors_repair(
    *,
    fix: bool = True,
    progress: Callable[[str], None] | None = None,
    retry_quarantined: bool = False,
    retry_due_only: bool = False,
    text_since=None,
) -> RepairReport:
    """Find drift between PostgreSQL and Qdrant, and chunks that do not match their document's
    text, and (optionally) repair it. Quarantined chunks stay failed unless ``retry_quarantined``.
    ``text_since``: compare only documents updated from then on, and ``retry_due_only``: retry
    only failed chunks whose backoff has passed (both for the periodic check)."""
    say = progress or (lambda message: None)
    store = get_vector_store()
    embedder = get_embedder()
    store.ensure_collection(dimension=embedder.dimension, model_id=embedder.model_id)
    report = RepairReport()
    report.pending_before = pending_chunks().count()
    report.quarantined = quarantined_chunks().count()
    failed = Chunk.objects.filter(index_status=Chunk.IndexStatus.FAILED)
    report.requeued_failed = failed.count() - (0 if retry_quarantined else report.quarantined)
    report.mismatched_documents = documents_mismatched(since=text_since)

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
    for pk in (
        Chunk.objects.filter(index_status=Chunk.IndexStatus.INDEXED)
        .values_list("pk", flat=True)
        .iterator(chunk_size=5000)
    ):
        if str(pk) not in point_ids:
            missing.append(pk)
    report.missing_points = len(missing)

    if fix:
        documents_rechunk(report.mismatched_documents)
        with transaction.atomic():
            vectors_retry_failed(include_quarantined=retry_quarantined, due_only=retry_due_only)
            for start in range(0, len(missing), 5000):
                Chunk.objects.filter(pk__in=missing[start : start + 5000]).update(
                    index_status=Chunk.IndexStatus.PENDING
                )
        for start in range(0, len(orphans), 1000):
            store.delete(orphans[start : start + 1000])
    return report


class VectorsHealer:
    """The loop that keeps the vector index in step without an operator (one per worker process).

    Every tick puts failed chunks whose backoff has passed back to pending and syncs what is
    pending, so an index left behind by an outage catches up once the embedder or the store is
    back, without new documents arriving. While a sync stops on an outage the wait between ticks
    doubles, from VECTORS_RETRY_INTERVAL up to VECTORS_RETRY_MAX_INTERVAL. The drift check runs
    at the first tick and then every VECTORS_DRIFT_INTERVAL seconds; after the first it compares
    only documents updated since the previous check began (minus a margin for transactions that
    were still open). Several workers may each run one: syncs take an advisory lock, and every
    repair is idempotent.
    """

    # A document updated by a transaction that began before a check and committed after it
    # carries an updated_at from before the check: look back this far as well.
    TEXT_CHECK_MARGIN = 600.0

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.delay = settings.VECTORS_RETRY_INTERVAL
        self._next_drift = 0.0  # monotonic; 0: at the first tick
        self._text_since = None
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="ragsite-vectors-healer", daemon=True)
        self._thread.start()
        return self._thread

    def run(self) -> None:
        wait = 0.0
        while not self.stop.wait(wait):
            try:
                wait = self.tick()
            finally:
                connection.close()  # this thread's own connection: never left idle between rounds

    def tick(self) -> float:
        """One round; returns the seconds to wait before the next."""
        try:
            self._drift_if_due()
            if self.stop.is_set():
                return 0.0
            report = self._retry()
        except Exception:  # a healer that dies silently heals nothing again
            logger.exception("vector healer: the round failed; trying again later")
            report = None
        if report is None or report.stopped_by:
            self.delay = min(self.delay * 2, settings.VECTORS_RETRY_MAX_INTERVAL)
            return self.delay
        self.delay = settings.VECTORS_RETRY_INTERVAL
        return self.delay

    def _retry(self) -> SyncReport:
        requeued = vectors_retry_failed()
        if requeued:
            logger.info("vector healer: retrying %d failed chunks", requeued)
        if not pending_chunks().exists():
            return SyncReport()
        report = vectors_sync_pending()
        if report.stopped_by:
            logger.warning("vector healer: sync stopped (%s); next try in %.0fs", report.stopped_by, self.delay * 2)
        return report

    def _drift_if_due(self) -> None:
        interval = settings.VECTORS_DRIFT_INTERVAL
        if self._next_drift and (not interval or time.monotonic() < self._next_drift):
            return
        started = timezone.now()
        found = vectors_repair(fix=True, retry_due_only=True, text_since=self._text_since)
        self._text_since = started - timedelta(seconds=self.TEXT_CHECK_MARGIN)
        self._next_drift = time.monotonic() + (interval or float("inf"))
        if found.orphan_points or found.missing_points or found.mismatched_documents:
            logger.warning(
                "vector drift repaired: %d points with no chunk removed, %d chunks with no point re-queued, "
                "%d documents re-chunked",
                found.orphan_points,
                found.missing_points,
                len(found.mismatched_documents),
            )
