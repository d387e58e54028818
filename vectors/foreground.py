"""The end of a bulk command that embeds in the foreground (`ingest`, `crawl`, `evaluate`).

``ForegroundEmbedding`` is what ``documents.signals.foreground_embedding`` hands `manage.py
ingest` (documents cannot import this app); `crawl` and `evaluate`, which sit above both apps,
call ``embed_pending_foreground`` directly.
"""

from __future__ import annotations

from django.conf import settings

from documents.models import Chunk
from ragsite.progress import counted
from vectors.alongside import SyncAlongside
from vectors.stores import VectorStoreError, get_vector_store
from vectors.sync import SyncReport, pending_chunks, vectors_sync_pending
from vectors.tasks import enqueue_vector_sync


class ForegroundEmbedding:
    """One bulk command's embedding: alongside storing with a remote embedder, else after it."""

    def __init__(self) -> None:
        self.alongside = sync_alongside_start() if embeds_alongside() else None

    def watch(self, bar) -> None:
        """Show the chunks embedded so far on the command's storing progress bar."""
        alongside = self.alongside
        if alongside is not None:
            alongside.progress = lambda n: bar.set_postfix(embedded=alongside.report.indexed, refresh=False)

    def stored(self, chunks_added: int) -> None:
        if self.alongside is not None:
            self.alongside.stored(chunks_added)

    def finish(self, stdout, stderr) -> SyncReport | None:
        return embed_pending_foreground(stdout, stderr, alongside=self.alongside)

    def abort(self) -> None:
        if self.alongside is not None:
            self.alongside.abort()  # what is stored stays; its chunks stay pending for the next sync


def embed_pending_foreground(
    stdout, stderr, *, alongside: SyncAlongside | None = None, progress_bar=None
) -> SyncReport | None:
    """The end of a bulk command (`ingest`, `crawl`): embed what is pending, with a progress bar.

    ``alongside`` is the command's ``SyncAlongside`` if it embedded while storing. If the vector
    store is unreachable, a sync is queued for the worker instead. Writes one summary line.
    """
    if progress_bar is None:
        from ragsite.progress import counted, progress_bar
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
            enqueue_vector_sync()
            stdout.write(
                f"{counted(pending, 'chunk')} queued for embedding; the running worker will index them ({exc})"
            )
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
        stdout.write(f"embedded {counted(report.indexed, 'chunk')} ({report.cache_hits} from cache); {failed} failed")
    return report
