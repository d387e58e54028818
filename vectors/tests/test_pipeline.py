"""The vector pipeline end to end: what ingestion, updates and deletions do to the embedding
cache and the store. Real parsing, real local model, real PostgreSQL and vector store."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.postgres.search import SearchQuery
from django.core.management import call_command

from documents.models import Chunk, Document, Source
from documents.services import document_delete, document_ingest, source_delete
from vectors.models import EmbeddingCache
from vectors.sync import vectors_sync_pending

FIXTURES = Path(__file__).resolve().parents[2] / "documents" / "tests" / "fixtures"

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def source(db):
    return Source.objects.create(name="library")


def ingest_file(source, name: str, **kwargs):
    return document_ingest(source=source, data=(FIXTURES / name).read_bytes(), filename=name, **kwargs)


def point_ids(store) -> set[str]:
    return {i for ids in store.iter_ids(batch_size=500) for i in ids}


def long_markdown(paragraph_three: str = "Bees fly in straight lines to flowers they remember.") -> str:
    sections = []
    for n in range(1, 7):
        body = paragraph_three if n == 3 else f"Section {n} talks about topic number {n} at length. " * 25
        sections.append(f"## Part {n}\n\n{body}\n")
    return "# Long guide\n\n" + "\n".join(sections)


def post_text(client, **body):
    body.setdefault("title", "Tea")
    body.setdefault("text", "Green tea is steamed soon after picking. Black tea is fully oxidised.")
    return client.post("/api/documents/", body, content_type="application/json")


def test_reingest_of_unchanged_document_embeds_nothing(source, fresh_store, run_commit_hooks, embed_spy):
    with run_commit_hooks():
        first = ingest_file(source, "guide.md")
    embedded_once = len(embed_spy)
    assert embedded_once == first.document.chunks.count()
    with run_commit_hooks():
        second = ingest_file(source, "guide.md")
    assert second.document.pk == first.document.pk
    assert not second.created and not second.changed
    assert Document.objects.filter(source=source).count() == 1
    assert len(embed_spy) == embedded_once


def test_editing_one_paragraph_reembeds_only_the_affected_chunks(source, fresh_store, run_commit_hooks, embed_spy):
    url = "https://example.com/long"
    with run_commit_hooks():
        first = document_ingest(source=source, url=url, text=long_markdown(), mime="text/markdown")
    total = first.document.chunks.count()
    assert total >= 6
    before = set(first.document.chunks.values_list("id", flat=True))
    embed_spy.clear()
    with run_commit_hooks():
        second = document_ingest(
            source=source,
            url=url,
            text=long_markdown("Bees dance to tell the hive where nectar is."),
            mime="text/markdown",
        )
    assert second.document.pk == first.document.pk and second.changed
    assert second.chunks_added == 1 and second.chunks_removed == 1
    assert len(embed_spy) == 1 and "dance" in embed_spy[0]
    after = set(second.document.chunks.values_list("id", flat=True))
    assert len(before & after) == total - 1
    assert point_ids(fresh_store) == {str(i) for i in after}


def test_qdrant_holds_one_point_per_chunk_with_the_payload(source, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        doc = ingest_file(source, "guide.md", url="https://example.com/guide", metadata={"lang": "en"}).document
    chunk_ids = {str(i) for i in doc.chunks.values_list("id", flat=True)}
    assert point_ids(fresh_store) == chunk_ids
    assert fresh_store.count() == len(chunk_ids)
    from vectors.embedders import get_embedder

    hits = fresh_store.search(get_embedder().embed_query("wax foundation frames"), limit=3)
    payload = hits[0].payload
    assert payload["document_id"] == doc.pk and payload["source_id"] == source.pk
    assert payload["source"] == "library" and payload["title"] == "Beekeeping Basics"
    assert payload["url"] == "https://example.com/guide"
    assert payload["metadata"]["lang"] == "en"


def test_deleting_a_document_or_a_source_removes_their_points(source, fresh_store, run_commit_hooks):
    other = Source.objects.create(name="other")
    with run_commit_hooks():
        doc = ingest_file(source, "guide.md").document
        kept = ingest_file(other, "notes.txt").document
    kept_ids = {str(i) for i in kept.chunks.values_list("id", flat=True)}
    with run_commit_hooks():
        document_delete(document=doc)
    assert point_ids(fresh_store) == kept_ids
    with run_commit_hooks():
        source_delete(source=other)
    assert point_ids(fresh_store) == set()


def test_qdrant_down_during_ingest_loses_nothing_and_vectors_sync_repairs(
    source, settings, run_commit_hooks, fresh_store
):
    collection = settings.QDRANT_COLLECTION
    settings.QDRANT_URL = "http://127.0.0.1:9"  # nothing listens there
    settings.QDRANT_TIMEOUT = 1
    with run_commit_hooks():
        doc = ingest_file(source, "guide.md").document
    assert doc.pk and doc.chunks.count() > 0
    assert set(doc.chunks.values_list("index_status", flat=True)) == {Chunk.IndexStatus.PENDING}
    assert "QDRANT" in doc.chunks.first().last_error.upper()
    # Keyword search works the moment the transaction commits, vectors or not.
    assert Chunk.objects.filter(search_vector=SearchQuery("ventilation", config="english"), document=doc).exists()

    settings.QDRANT_URL = ""
    settings.QDRANT_COLLECTION = collection
    call_command("vectors_sync", stdout=open("/dev/null", "w"))
    assert set(doc.chunks.values_list("index_status", flat=True)) == {Chunk.IndexStatus.INDEXED}
    from vectors.stores import get_vector_store

    assert point_ids(get_vector_store()) == {str(i) for i in doc.chunks.values_list("id", flat=True)}


@pytest.fixture
def openai_embedder(settings, openai_server):
    settings.EMBEDDING_BACKEND = "openai"
    settings.EMBEDDING_MODEL = "text-embedding-3-small"
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_MAX_RETRIES = 0
    settings.EMBEDDING_BATCH_SIZE = 2
    return openai_server


def test_embedder_failing_mid_batch_leaves_no_partial_vectors(source, fresh_store, openai_embedder, run_commit_hooks):
    # The first request of the batch succeeds, the second fails: nothing of the batch may land.
    openai_embedder.route("/v1/embeddings", _fail_after(openai_embedder, ok_requests=1))
    with run_commit_hooks():
        doc = document_ingest(source=source, url="https://example.com/long", text=long_markdown(), mime="text/markdown")
    assert doc.document.chunks.count() > 2
    assert fresh_store.count() == 0
    assert not doc.document.chunks.filter(index_status=Chunk.IndexStatus.INDEXED).exists()
    assert EmbeddingCache.objects.count() == 0

    from ragsite.tests.openai_server import embeddings_handler

    openai_embedder.route("/v1/embeddings", embeddings_handler)
    call_command("vectors_sync", stdout=open("/dev/null", "w"))
    assert fresh_store.count() == doc.document.chunks.count()


def _fail_after(server, *, ok_requests: int):
    from ragsite.tests.openai_server import embeddings_handler, error_reply

    seen = {"n": 0}

    def handler(srv, request):
        seen["n"] += 1
        if seen["n"] <= ok_requests:
            return embeddings_handler(srv, request)
        return error_reply(500)

    return handler


def test_auth_error_stops_the_sync_and_leaves_chunks_pending(source, fresh_store, openai_embedder, run_commit_hooks):
    openai_embedder.fail_next("/v1/embeddings", status=401, times=100)
    with run_commit_hooks():
        doc = ingest_file(source, "notes.txt").document
    statuses = set(doc.chunks.values_list("index_status", flat=True))
    assert statuses == {Chunk.IndexStatus.PENDING}
    assert "Auth" in doc.chunks.first().last_error
    assert len(openai_embedder.requests_to("/v1/embeddings")) == 1  # no retries on auth errors
    assert fresh_store.count() == 0


def test_crash_between_commit_and_enqueue_is_repaired_by_vectors_sync(
    source, fresh_store, django_capture_on_commit_callbacks
):
    # Callbacks captured but never run: the process "died" right after the commit.
    with django_capture_on_commit_callbacks(execute=False):
        doc = ingest_file(source, "guide.md").document
    assert fresh_store.count() == 0
    orphan = "00000000-0000-4000-8000-000000000001"
    from vectors.embedders import get_embedder
    from vectors.stores import VectorPoint

    embedder = get_embedder()
    fresh_store.ensure_collection(dimension=embedder.dimension, model_id=embedder.model_id)
    fresh_store.upsert([VectorPoint(id=orphan, vector=embedder.embed_query("stray"), payload={"document_id": 0})])

    from io import StringIO

    out = StringIO()
    call_command("vectors_sync", stdout=out)
    assert "1 points with no chunk" in out.getvalue()
    assert point_ids(fresh_store) == {str(i) for i in doc.chunks.values_list("id", flat=True)}

    # A row marked indexed whose point vanished is found and re-indexed.
    lost = doc.chunks.first()
    fresh_store.delete([str(lost.pk)])
    out = StringIO()
    call_command("vectors_sync", stdout=out)
    assert "1 indexed chunks with no point" in out.getvalue()
    assert str(lost.pk) in point_ids(fresh_store)


def test_sync_marks_indexed_only_chunks_whose_content_did_not_change(
    source, fresh_store, django_capture_on_commit_callbacks, embed_spy
):
    with django_capture_on_commit_callbacks(execute=False):
        doc = ingest_file(source, "notes.txt").document
    chunk = doc.chunks.first()
    from documents.services import _sha256, embedding_input
    from vectors import sync

    original = sync.embed_chunks
    edits = []

    def embed_then_edit(chunks, report=None):
        vectors = original(chunks, report)
        if not edits:
            # Someone edits the chunk after the sync read it and before it marks it.
            chunk.text = "Rewritten while the sync was embedding."
            chunk.content_hash = _sha256(embedding_input(chunk, chunk.context))
            Chunk.objects.filter(pk=chunk.pk).update(text=chunk.text, content_hash=chunk.content_hash)
            edits.append(chunk.pk)
        return vectors

    sync.embed_chunks = embed_then_edit
    try:
        report = vectors_sync_pending()
    finally:
        sync.embed_chunks = original
    chunk.refresh_from_db()
    # The stale vector was not taken as the new text's: the chunk stayed pending and was
    # embedded again, with its new text, before being marked indexed.
    assert chunk.index_status == Chunk.IndexStatus.INDEXED
    assert any("Rewritten while the sync" in text for text in embed_spy)
    assert report.indexed == doc.chunks.count()


def test_sync_batches_never_read_the_document_text(source, fresh_store):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    document_ingest(source=source, title="Long", text=long_markdown(), mime="text/markdown")

    with CaptureQueriesContext(connection) as queries:
        report = vectors_sync_pending()

    assert report.indexed == Chunk.objects.count() > 1
    document_text = f'"{Document._meta.db_table}"."text"'
    assert not [q["sql"] for q in queries.captured_queries if document_text in q["sql"]]


def test_sync_queries_do_not_grow_with_the_chunks(source, fresh_store):
    """A batch is read in one query with every field the sync uses: one left out (the attempts the
    quarantine checks on each chunk) cost a query per chunk, ~5% of an ingest's time."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def sync(title: str, text: str) -> tuple[int, int]:
        document_ingest(source=source, title=title, text=text, mime="text/markdown")
        with CaptureQueriesContext(connection) as queries:
            report = vectors_sync_pending()
        return report.indexed, len(queries.captured_queries)

    sync("Warm-up", "The first sync creates the collection.")
    one, one_queries = sync("Short", "Bees remember the flowers they visited.")
    many, many_queries = sync("Long", long_markdown())

    assert one == 1 and many >= 6
    assert many_queries == one_queries


def test_patching_a_document_changes_title_and_metadata_and_resyncs_points(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        doc = post_text(api).json()
        response = api.patch(
            f"/api/documents/{doc['id']}/",
            {"title": "Tea, revised", "metadata": {"lang": "en"}},
            content_type="application/json",
        )
    assert response.status_code == 200, response.content
    assert response.json()["title"] == "Tea, revised"
    from vectors.embedders import get_embedder

    hit = fresh_store.search(get_embedder().embed_query("green tea"), limit=1)[0]
    assert hit.payload["title"] == "Tea, revised" and hit.payload["metadata"] == {"lang": "en"}
