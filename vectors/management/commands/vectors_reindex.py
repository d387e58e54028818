"""`manage.py vectors_reindex [--recreate] [--source NAME]`: rebuild vectors from PostgreSQL."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from documents.maintenance import tables_analyze
from documents.models import Chunk, Source
from ragsite.progress import counted, progress_bar
from vectors.embedders import get_embedder
from vectors.stores import VectorStoreError, get_vector_store
from vectors.sync import pending_chunks, vectors_sync_pending


class Command(BaseCommand):
    help = "Re-embed and re-upsert chunks; --recreate drops the collection first (model or dimension change)."

    def add_arguments(self, parser):
        parser.add_argument("--recreate", action="store_true", help="drop and recreate the collection")
        parser.add_argument("--source", help="only this source's chunks (not with --recreate)")
        parser.add_argument(
            "--optimize",
            action="store_true",
            help="embedded edge store: build the HNSW index afterwards and wait for it (minutes at 100k points, "
            "in a child process; the serving process builds it by itself, see QDRANT_EDGE_INDEX_THRESHOLD)",
        )

    def handle(self, *args, recreate: bool, source: str | None, optimize: bool, **options):
        chunks = Chunk.objects.all()
        if source:
            if recreate:
                raise CommandError("--recreate rebuilds the whole collection; drop --source or --recreate")
            try:
                src = Source.objects.get(name=source)
            except Source.DoesNotExist:
                raise CommandError(f"no source named {source!r}") from None
            chunks = chunks.filter(document__source=src)
        embedder = get_embedder()
        try:
            if recreate:
                get_vector_store().recreate(dimension=embedder.dimension, model_id=embedder.model_id)
                self.stdout.write(f"recreated the collection for {embedder.model_id} ({embedder.dimension} dims)")
            else:
                get_vector_store().ensure_collection(dimension=embedder.dimension, model_id=embedder.model_id)
        except VectorStoreError as exc:
            raise CommandError(str(exc)) from exc
        marked = chunks.update(index_status=Chunk.IndexStatus.PENDING, last_error="")
        self.stdout.write(f"{counted(marked, 'chunk')} queued for re-indexing")
        with progress_bar(pending_chunks().count(), "reindex", "chunk") as bar:
            report = vectors_sync_pending(progress=bar.update)
        self.stdout.write(
            f"indexed {counted(report.indexed, 'chunk')} ({report.cache_hits} from cache), {report.failed} failed"
        )
        tables_analyze()  # every chunk row was rewritten twice (pending, then indexed)
        if report.stopped_by:
            raise CommandError(f"reindex stopped: {report.stopped_by}")
        if optimize:
            self.stdout.write("building the vector index (HNSW)…")
            built = get_vector_store().optimize()
            self.stdout.write("index built" if built else "nothing to optimize for this engine")
