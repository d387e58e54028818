"""Ingestion end to end: real parsing, real local model, real PostgreSQL and Qdrant local store."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.postgres.search import SearchQuery
from django.core.management import call_command

from documents.models import Chunk, Document, EmbeddingCache, Source
from documents.services import IngestError, document_delete, document_ingest, source_delete
from documents.sync import vectors_sync_pending

FIXTURES = Path(__file__).parent / "fixtures"

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


def test_markdown_ingests_into_chunks_that_keep_their_headings(source, fresh_store, run_commit_hooks, settings):
    # Small chunks, so the short guide cannot fit in one chunk under its top heading.
    settings.CHUNK_SIZE_TOKENS, settings.CHUNK_OVERLAP_TOKENS = 64, 8
    with run_commit_hooks():
        result = ingest_file(source, "guide.md")
    doc = result.document
    assert result.created and doc.title == "Beekeeping Basics"
    chunks = list(doc.chunks.order_by("ordinal"))
    assert chunks and [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert len(chunks) >= 3
    assert any(c.heading_path == ["Beekeeping Basics", "The Hive"] and "Ventilation" in c.text for c in chunks)
    assert all(c.heading_path[0] == "Beekeeping Basics" for c in chunks)
    for chunk in chunks:
        assert doc.text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.context.startswith("Beekeeping Basics")
        assert chunk.index_status == Chunk.IndexStatus.INDEXED


def test_html_ingests_main_text_with_the_page_title(source, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        doc = ingest_file(source, "page.html", mime="text/html").document
    assert doc.title
    assert doc.mime_type == "text/html"
    assert "cookie" not in doc.text.lower() or "nav" not in doc.text.lower()
    assert doc.chunks.exists()


def test_pdf_chunks_keep_their_page_numbers(source, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        doc = ingest_file(source, "orchard-report.pdf").document
    assert doc.mime_type == "application/pdf"
    assert doc.metadata["pages"] == 3
    pages = set()
    for chunk in doc.chunks.all():
        assert chunk.metadata["page"] >= 1
        pages.update(chunk.metadata.get("pages", [chunk.metadata["page"]]))
    assert pages == {1, 2, 3}


def test_plain_text_ingests(source, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        doc = ingest_file(source, "notes.txt").document
    assert doc.mime_type == "text/plain"
    assert doc.chunks.count() >= 1


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
    from documents.embeddings import get_embedder

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
    from documents.vectorstore import get_vector_store

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

    from documents.tests.openai_server import embeddings_handler

    openai_embedder.route("/v1/embeddings", embeddings_handler)
    call_command("vectors_sync", stdout=open("/dev/null", "w"))
    assert fresh_store.count() == doc.document.chunks.count()


def _fail_after(server, *, ok_requests: int):
    from documents.tests.openai_server import embeddings_handler, error_reply

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
    from documents.embeddings import get_embedder
    from documents.vectorstore import VectorPoint

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
    from documents import sync
    from documents.services import _sha256, embedding_input

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


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"text": "   \n\t  "}, "text"),
        ({"data": (FIXTURES / "junk.bin").read_bytes(), "filename": "junk.bin"}, "file"),
        ({"data": b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "mime": "image/png", "filename": "x.png"}, "file"),
    ],
)
def test_bad_input_is_rejected_and_nothing_is_stored(source, kwargs, field):
    with pytest.raises(IngestError) as caught:
        document_ingest(source=source, **kwargs)
    assert caught.value.field == field
    assert caught.value.message
    assert Document.objects.count() == 0 and Chunk.objects.count() == 0


def test_content_over_the_size_limit_is_rejected(source, settings):
    settings.INGEST_MAX_BYTES = 2048
    with pytest.raises(IngestError) as caught:
        document_ingest(source=source, text="word " * 1000)
    assert caught.value.code == "too_large" and "INGEST_MAX_BYTES" in caught.value.message
    assert Document.objects.count() == 0


def test_ingest_command_reads_folders_and_reports_counts(source, fresh_store, tmp_path, run_commit_hooks):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_bytes((FIXTURES / "guide.md").read_bytes())
    (tmp_path / "sub" / "b.txt").write_bytes((FIXTURES / "notes.txt").read_bytes())
    (tmp_path / "bad.bin").write_bytes((FIXTURES / "junk.bin").read_bytes())
    from io import StringIO

    out, err = StringIO(), StringIO()
    with run_commit_hooks():
        call_command("ingest", str(tmp_path), "--recursive", "--source", "folder", stdout=out, stderr=err)
    assert "2 created, 0 updated, 0 unchanged, 1 failed" in out.getvalue()
    assert "bad.bin" in err.getvalue()
    assert Chunk.objects.filter(document__source__name="folder", index_status="indexed").exists()
    out = StringIO()
    with run_commit_hooks():
        call_command("ingest", str(tmp_path), "--recursive", "--source", "folder", stdout=out, stderr=StringIO())
    assert "0 created, 0 updated, 2 unchanged, 1 failed" in out.getvalue()


def test_ingest_many_stores_a_batch_like_one_by_one(source, fresh_store, run_commit_hooks):
    from documents.services import document_ingest_many

    one = Source.objects.create(name="one-by-one")
    items = [
        {"title": f"Note {n}", "url": f"https://example.com/{n}", "text": f"Note {n} is about topic {n}. " * (20 + n)}
        for n in range(5)
    ] + [{"title": "No url", "text": "A document without a url is identified by its content."}]
    with run_commit_hooks():
        results = document_ingest_many(source=source, items=items)
        singles = [document_ingest(source=one, **item) for item in items]
    assert [r.created for r in results] == [True] * len(items)
    assert [r.document.title for r in results] == [item["title"] for item in items]

    def stored(src):
        return [
            (
                d.title,
                d.url,
                d.content_hash,
                [(c.ordinal, c.text, c.content_hash, c.index_status) for c in d.chunks.order_by("ordinal")],
            )
            for d in Document.objects.filter(source=src).order_by("title")
        ]

    assert stored(source) == stored(one)
    assert [r.chunks_added for r in results] == [s.chunks_added for s in singles]
    assert {str(i) for r in results for i in r.added_chunk_ids} == set(
        str(i) for i in Chunk.objects.filter(document__source=source).values_list("pk", flat=True)
    )
    # The receivers heard of every new document: the chunks were embedded after commit.
    assert not Chunk.objects.exclude(index_status="indexed").exists()
    assert len(point_ids(fresh_store)) == Chunk.objects.count()
    # Keyword search sees the batch at commit.
    assert Chunk.objects.filter(search_vector=SearchQuery("topic", config="english")).count() >= 5


def test_ingest_many_reports_bad_items_in_place_and_handles_repeats_and_updates(source, fresh_store, run_commit_hooks):
    from documents.services import document_ingest_many

    with run_commit_hooks():
        document_ingest(
            source=source, title="Kept", url="https://example.com/kept", text="Unchanged text stays as it is."
        )
        document_ingest(
            source=source, title="Edited", url="https://example.com/edited", text="First version of the text."
        )
        results = document_ingest_many(
            source=source,
            items=[
                {"title": "Kept", "url": "https://example.com/kept", "text": "Unchanged text stays as it is."},
                {"title": "Edited", "url": "https://example.com/edited", "text": "Second version of the text."},
                {"title": "Empty", "url": "https://example.com/empty", "text": "   "},
                {"title": "Twice", "url": "https://example.com/twice", "text": "The first copy of a repeated url."},
                {"title": "Twice", "url": "https://example.com/twice", "text": "The second copy of a repeated url."},
                {"title": "Both", "text": "x", "data": b"x"},
            ],
        )
    kept, edited, empty, first, second, both = results
    assert (kept.created, kept.changed) == (False, False)
    assert (edited.created, edited.changed, edited.chunks_added, edited.chunks_removed) == (False, True, 1, 1)
    assert isinstance(empty, IngestError) and empty.code == "EmptyContent"
    assert isinstance(both, IngestError) and both.field == "text"
    assert first.created and not second.created and second.changed  # the second saw the first
    twice = Document.objects.get(url="https://example.com/twice")
    assert [c.text for c in twice.chunks.all()] == ["The second copy of a repeated url."]
    assert Document.objects.get(url="https://example.com/edited").chunks.get().text == "Second version of the text."
    assert not Document.objects.filter(url="https://example.com/empty").exists()
    assert Document.objects.filter(source=source).count() == 3


def test_ingest_many_falls_back_to_one_by_one_when_the_batch_fails(source, fresh_store, run_commit_hooks):
    from django.db import connection

    from documents.services import document_ingest_many

    # A real failure inside PostgreSQL for one row: the batch's transaction fails, nothing of it
    # is kept, and the items are stored one by one, so only the bad one fails.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION test_refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.title = 'Bad' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_refuse_bad BEFORE INSERT ON documents_document
                FOR EACH ROW EXECUTE FUNCTION test_refuse_bad();
            """
        )
    with run_commit_hooks():
        results = document_ingest_many(
            source=source,
            items=[
                {"title": "Good", "url": "https://example.com/good", "text": "A good document."},
                {"title": "Bad", "url": "https://example.com/bad", "text": "The database refuses this one."},
                {"title": "Also good", "url": "https://example.com/also", "text": "Another good document."},
            ],
        )
    good, bad, also = results
    assert good.created and also.created
    assert isinstance(bad, IngestError) and bad.code == "DatabaseError" and "refused" in bad.message
    assert sorted(Document.objects.values_list("title", flat=True)) == ["Also good", "Good"]
    assert not Chunk.objects.exclude(index_status="indexed").exists()


@pytest.mark.parametrize("metadata", [{"k": "a\u0000b"}, {"a\u0000": 1}, {"k": ["x", {"y": "\u0000"}]}])
def test_metadata_with_nul_characters_is_refused_before_storing(source, metadata):
    from documents.services import document_ingest_many

    with pytest.raises(IngestError) as caught:
        document_ingest(source=source, title="T", text="Some text.", metadata=metadata)
    assert caught.value.field == "metadata"
    (result,) = document_ingest_many(source=source, items=[{"title": "T", "text": "Some text.", "metadata": metadata}])
    assert isinstance(result, IngestError) and result.field == "metadata"
    assert Document.objects.count() == 0


# --- Large documents ----------------------------------------------------------------------------


def _over_a_tsvector(text: str) -> bool:
    """Whether PostgreSQL refuses one tsvector over the text (more than 1 MB of lexemes and positions)."""
    from django.db import DatabaseError, connection, transaction

    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT to_tsvector('english', %s)", [text])
    except DatabaseError:  # ProgramLimitExceeded: string is too long for tsvector
        return True
    return False


def log_lines(lines: int, seed: int = 1) -> str:
    import random

    rng = random.Random(seed)
    return "\n".join(
        f"12:{i // 60 % 60:02d}:{i % 60:02d} worker {i % 8} request {rng.getrandbits(40):010x} "
        f"trace {rng.getrandbits(40):010x} span {rng.getrandbits(40):010x} done"
        for i in range(lines)
    )


def test_a_log_too_large_for_one_tsvector_ingests_and_every_chunk_is_searchable(source):
    text = log_lines(32_000)
    assert _over_a_tsvector(text)  # a document-level vector could not hold it

    result = document_ingest(
        source=source, title="worker log", data=text.encode(), filename="worker.log", mime="text/plain"
    )

    chunks = result.document.chunks.order_by("ordinal")
    assert result.created and chunks.count() == result.chunks_added > 100
    last_request = text.rsplit("request ", 1)[1].split()[0]
    found = Chunk.objects.filter(search_vector=SearchQuery(last_request, config="english")).get()
    assert found.ordinal == chunks.last().ordinal


def test_ingest_command_stores_100k_markdown_headings(transactional_db, manage, tmp_path):
    import random

    from django.db import connection

    rng = random.Random(3)
    text = "".join(f"# Step {rng.getrandbits(40):010x}\n" for _ in range(100_000))
    path = tmp_path / "steps.md"
    path.write_text(text)
    assert _over_a_tsvector(text)
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"

    # Queued for a worker, not run inline by the tests' immediate task backend: storing is the test.
    env = {"DATABASE_URL": url, "TASKS_BACKEND": "database"}

    result = manage("ingest", str(path), "--source", "steps", "--no-embed", env=env, timeout=600)

    assert result.returncode == 0, result.stderr
    assert "1 created" in result.stdout and "0 failed" in result.stdout
    assert "Traceback" not in result.stderr
    doc = Document.objects.get(source__name="steps")
    assert Chunk.objects.filter(document=doc).count() > 10
    assert max(len(c) for c in Chunk.objects.filter(document=doc).values_list("context", flat=True)) < 1000


def test_a_storage_failure_in_the_ingest_command_is_one_line_without_a_traceback(
    source, fresh_store, tmp_path, run_commit_hooks, caplog
):
    from io import StringIO

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION test_refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.title = 'Bad' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_refuse_bad BEFORE INSERT ON documents_document
                FOR EACH ROW EXECUTE FUNCTION test_refuse_bad();
            """
        )
    (tmp_path / "bad.md").write_text("# Bad\n\nThe database refuses this one.\n")
    (tmp_path / "good.md").write_text("# Good\n\nA good document.\n")
    out, err = StringIO(), StringIO()

    with run_commit_hooks():
        call_command("ingest", str(tmp_path), "--source", "folder", stdout=out, stderr=err)

    assert "1 created, 0 updated, 0 unchanged, 1 failed" in out.getvalue()
    assert "bad.md" in err.getvalue() and "refused by a test trigger" in err.getvalue()
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


def test_sync_batches_never_read_the_document_text(source, fresh_store):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    document_ingest(source=source, title="Long", text=long_markdown(), mime="text/markdown")

    with CaptureQueriesContext(connection) as queries:
        report = vectors_sync_pending()

    assert report.indexed == Chunk.objects.count() > 1
    document_text = f'"{Document._meta.db_table}"."text"'
    assert not [q["sql"] for q in queries.captured_queries if document_text in q["sql"]]


def test_reading_documents_through_the_api_loads_no_text_or_vector_it_does_not_return(source, api):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    document = document_ingest(source=source, title="Long", text=long_markdown(), mime="text/markdown").document
    document_text = f'"{Document._meta.db_table}"."text"'
    chunk_vector = f'"{Chunk._meta.db_table}"."search_vector"'

    with CaptureQueriesContext(connection) as listing:
        assert api.get("/api/documents/").json()["results"][0]["id"] == document.pk
    with CaptureQueriesContext(connection) as detail:
        body = api.get(f"/api/documents/{document.pk}/").json()

    assert not [q["sql"] for q in listing.captured_queries if document_text in q["sql"]]
    assert body["text"] == document.text and len(body["chunks"]) == document.chunks.count() > 1
    selects = [q["sql"].split(" FROM ")[0] for q in detail.captured_queries]
    assert not [sql for sql in selects if chunk_vector in sql]


def test_the_largest_chunk_the_settings_allow_fits_a_tsvector(db):
    import random

    from documents.chunking import MAX_HEADING_CHARS, MAX_HEADING_DEPTH, chunk_document
    from documents.embeddings import get_tokenizer
    from documents.parsers import parse_document
    from documents.services import chunk_context

    # Hyphenated pairs of 101-letter words: the tokenizer reads each word as one [UNK], and
    # PostgreSQL indexes the pair and each part, so few tokens hold a lot of tsvector.
    rng = random.Random(0)
    word = lambda: "".join(chr(rng.randint(0xE0, 0x24F)) for _ in range(101))  # noqa: E731
    parsed = parse_document(text=" ".join(f"{word()}-{word()}" for _ in range(4000)), mime="text/plain")
    largest = lambda chunks: max((c.text for c in chunks), key=len)  # noqa: E731
    context = chunk_context("t" * 1000, [word()[:MAX_HEADING_CHARS]] * MAX_HEADING_DEPTH)
    sizes = {"tokenizer": get_tokenizer(), "chunk_tokens": 8192, "overlap_tokens": 0}  # the maximum setting

    unbounded = chunk_document(parsed, **sizes, max_chars=10**9)
    bounded = chunk_document(parsed, **sizes)

    assert _over_a_tsvector(largest(unbounded))  # as chunks were bounded in tokens only
    assert not _over_a_tsvector(context + "\n" + largest(bounded))
