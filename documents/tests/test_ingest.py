"""Ingestion end to end: real parsing, real local model, real PostgreSQL and Qdrant local store."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.postgres.search import SearchQuery
from django.core.management import call_command

from documents.models import Chunk, Document, Source
from documents.services import IngestError, document_ingest

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def source(db):
    return Source.objects.create(name="library")


def ingest_file(source, name: str, **kwargs):
    return document_ingest(source=source, data=(FIXTURES / name).read_bytes(), filename=name, **kwargs)


def point_ids(store) -> set[str]:
    return {i for ids in store.iter_ids(batch_size=500) for i in ids}


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
            (d.title, d.url, d.content_hash, [(c.ordinal, c.text, c.content_hash, c.index_status) for c in d.chunks.order_by("ordinal")])
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
        document_ingest(source=source, title="Kept", url="https://example.com/kept", text="Unchanged text stays as it is.")
        document_ingest(source=source, title="Edited", url="https://example.com/edited", text="First version of the text.")
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
