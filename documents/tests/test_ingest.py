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


def long_markdown(paragraph_three: str = "Bees fly in straight lines to flowers they remember.") -> str:
    sections = []
    for n in range(1, 7):
        body = paragraph_three if n == 3 else f"Section {n} talks about topic number {n} at length. " * 25
        sections.append(f"## Part {n}\n\n{body}\n")
    return "# Long guide\n\n" + "\n".join(sections)


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
    assert doc.title == "Field Guide to Tidepools"
    assert doc.mime_type == "text/html"
    assert "Sea anemones attach to rocks with an adhesive foot" in doc.text
    assert "- Check the tide tables before you go." in doc.text
    # Navigation, footer, styles and scripts are page furniture, not text to search.
    for furniture in (
        "Subscribe to our newsletter",
        "All guides",
        "Cookie settings",
        "Copyright",
        "font-family",
        "analytics",
    ):
        assert furniture not in doc.text, furniture
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

    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
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

    assert "1 created, 0 updated, 0 unchanged, 1 failed; 1 new chunk\n" in out.getvalue()  # not "1 new chunks"
    assert "bad.md" in err.getvalue() and "refused by a test trigger" in err.getvalue()
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


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
    from documents.parsers import parse_document
    from documents.services import chunk_context
    from documents.tokenizer import get_tokenizer

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
