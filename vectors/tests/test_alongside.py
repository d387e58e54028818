"""Embedding alongside storing (vectors.alongside.SyncAlongside, what `manage.py ingest` uses).

Real PostgreSQL, real local model, real vector store; batches of two chunks so that a handful of
small documents goes through several flights while the documents are still being stored.
"""

from __future__ import annotations

import pytest

from documents.models import Chunk, Source
from documents.services import _sha256, document_ingest, embedding_input
from documents.signals import changes_batched
from vectors.alongside import SyncAlongside
from vectors.embedders import EmbeddingAuthError, EmbeddingError, get_embedder
from vectors.sync import vectors_sync_pending

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

TOPICS = ["bees", "orchards", "rivers", "glaciers", "violins", "lighthouses", "ferns", "comets"]


@pytest.fixture
def source(db):
    return Source.objects.create(name="alongside")


def point_ids(store) -> set[str]:
    return {i for ids in store.iter_ids(batch_size=500) for i in ids}


def store_all(source, alongside: SyncAlongside | None, docs: list[tuple[str, str]]) -> int:
    added = 0
    with changes_batched(embed_here=True):
        for title, text in docs:
            result = document_ingest(source=source, title=title, url=f"test://{title}", text=text, mime="text/plain")
            added += result.chunks_added
            if alongside is not None:
                alongside.stored(result.chunks_added)
    return added


def test_chunks_are_embedded_while_storing_and_each_content_once(source, fresh_store, embed_spy):
    docs = [(topic, f"A short note about {topic}. It has two sentences.") for topic in TOPICS]
    alongside = SyncAlongside(batch_size=2)
    assert alongside.start()
    with changes_batched(embed_here=True):
        for title, text in docs:
            result = document_ingest(source=source, title=title, url=f"test://{title}", text=text, mime="text/plain")
            alongside.stored(result.chunks_added)
        # A second document with the same content: its chunk shares the first one's hash.
        duplicate = document_ingest(source=source, title="bees", url="test://bees-again", text=docs[0][1])
        alongside.stored(duplicate.chunks_added)
        # Batches went to the embedder before storing ended.
        assert alongside.report.indexed + len(alongside._flights) > 0
        report = alongside.finish()
    chunks = list(Chunk.objects.filter(document__source=source))
    assert len(chunks) == len(docs) + 1
    assert report.ok and not report.skipped_locked
    assert report.indexed == len(chunks) and report.embedded + report.cache_hits == len(chunks)
    assert all(c.index_status == Chunk.IndexStatus.INDEXED for c in chunks)
    assert point_ids(fresh_store) == {str(c.pk) for c in chunks}
    distinct = {c.content_hash for c in chunks}
    assert report.embedded == len(distinct) == len(embed_spy) == len(set(embed_spy))

    # Identical re-ingest with the sync alongside: nothing is pending, nothing is embedded.
    embed_spy.clear()
    again = SyncAlongside(batch_size=2)
    assert again.start()
    assert store_all(source, again, docs) == 0
    report = again.finish()
    assert report.ok and report.indexed == 0 and embed_spy == []


def test_a_chunk_edited_while_its_batch_is_embedded_is_embedded_again(source, fresh_store, embed_spy):
    alongside = SyncAlongside(batch_size=2)
    assert alongside.start()
    store_all(source, alongside, [(t, f"Notes on {t}. Two sentences here.") for t in TOPICS[:2]])
    assert alongside._flights, "two new chunks make a full batch"
    chunk = alongside._flights[0].batch[0]
    chunk.text = "Rewritten while the sync was embedding."
    Chunk.objects.filter(pk=chunk.pk).update(
        text=chunk.text, content_hash=_sha256(embedding_input(chunk, chunk.context))
    )
    report = alongside.finish()
    chunk.refresh_from_db()
    assert chunk.index_status == Chunk.IndexStatus.INDEXED
    assert any("Rewritten while the sync" in text for text in embed_spy)
    assert report.ok and not Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING).exists()


def test_a_refused_chunk_is_marked_failed_and_the_rest_of_its_batch_is_indexed(source, fresh_store, monkeypatch):
    embedder = get_embedder()
    original = embedder.embed_documents
    poison = TOPICS[2]

    def refuse_one(texts):
        if any(poison in text for text in texts):
            raise EmbeddingError("the model fell over")
        return original(texts)

    monkeypatch.setattr(embedder, "embed_documents", refuse_one)
    alongside = SyncAlongside(batch_size=2)
    assert alongside.start()
    store_all(source, alongside, [(t, f"Notes on {t}. Two sentences here.") for t in TOPICS[:6]])
    report = alongside.finish()
    statuses = dict(Chunk.objects.values_list("text", "index_status"))
    failed = [text for text, status in statuses.items() if status == Chunk.IndexStatus.FAILED]
    assert len(failed) == 1 and poison in failed[0]
    assert list(statuses.values()).count(Chunk.IndexStatus.INDEXED) == 5
    assert report.failed == 1 and report.indexed == 5 and "the model fell over" in report.errors[0]
    assert "the model fell over" in Chunk.objects.get(index_status=Chunk.IndexStatus.FAILED).last_error


def test_an_auth_error_stops_and_leaves_every_chunk_pending(source, fresh_store, monkeypatch):
    embedder = get_embedder()

    def refuse(texts):
        raise EmbeddingAuthError("bad key")

    monkeypatch.setattr(embedder, "embed_documents", refuse)
    alongside = SyncAlongside(batch_size=2)
    assert alongside.start()
    store_all(source, alongside, [(t, f"Notes on {t}. Two sentences here.") for t in TOPICS[:6]])
    report = alongside.finish()
    assert "bad key" in report.stopped_by and report.indexed == 0
    assert not Chunk.objects.exclude(index_status=Chunk.IndexStatus.PENDING).exists()
    assert Chunk.objects.filter(last_error__contains="bad key").exists()


def test_an_interrupt_leaves_chunks_pending_and_releases_the_lock(source, fresh_store):
    alongside = SyncAlongside(batch_size=2)
    assert alongside.start()
    store_all(source, alongside, [(t, f"Notes on {t}. Two sentences here.") for t in TOPICS[:4]])
    alongside.abort()  # KeyboardInterrupt in the command
    assert Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING).exists()
    report = vectors_sync_pending()  # the lock is free again and the next sync finishes the job
    assert not report.skipped_locked and report.ok
    assert not Chunk.objects.exclude(index_status=Chunk.IndexStatus.INDEXED).exists()
    assert point_ids(fresh_store) == {str(pk) for pk in Chunk.objects.values_list("pk", flat=True)}


def test_the_sync_lock_is_held_from_start_to_finish(source, fresh_store):
    import psycopg
    from django.db import connection

    from vectors.sync import SYNC_LOCK_KEY

    def other_session_can_lock() -> bool:
        # Advisory locks are re-entrant within one session: ask from another one.
        with psycopg.connect(
            dbname=connection.settings_dict["NAME"], **_conninfo(connection), autocommit=True
        ) as other:
            taken = other.execute("SELECT pg_try_advisory_lock(%s)", [SYNC_LOCK_KEY]).fetchone()[0]
            if taken:
                other.execute("SELECT pg_advisory_unlock(%s)", [SYNC_LOCK_KEY])
            return taken

    alongside = SyncAlongside(batch_size=2)
    assert alongside.start()
    assert not other_session_can_lock()
    alongside.finish()
    assert other_session_can_lock()


def _conninfo(connection) -> dict:
    info = connection.connection.info
    return {"host": info.host, "port": info.port, "user": info.user}


def test_ingest_command_while_another_sync_runs_leaves_the_chunks_to_it(source, fresh_store, tmp_path):
    from io import StringIO

    import psycopg
    from django.core.management import call_command
    from django.db import connection

    from vectors.sync import SYNC_LOCK_KEY

    (tmp_path / "a.txt").write_text("Notes on bees. Two sentences here.")
    connection.ensure_connection()
    with psycopg.connect(dbname=connection.settings_dict["NAME"], **_conninfo(connection), autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [SYNC_LOCK_KEY]).fetchone()[0]
        out = StringIO()
        call_command("ingest", str(tmp_path), "--source", "locked", stdout=out, stderr=StringIO())
    assert "1 created" in out.getvalue()
    assert "another process is already embedding" in out.getvalue()
    assert Chunk.objects.filter(document__source__name="locked", index_status=Chunk.IndexStatus.PENDING).exists()


def test_ingest_command_with_a_remote_embedder_embeds_while_storing(
    source, fresh_store, tmp_path, settings, openai_server, monkeypatch
):
    from io import StringIO

    from django.core.management import call_command

    from vectors import foreground

    settings.EMBEDDING_BACKEND = "openai"
    settings.EMBEDDING_MODEL = "text-embedding-3-small"
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_MAX_RETRIES = 0
    assert foreground.embeds_alongside()
    monkeypatch.setitem(SyncAlongside.__init__.__kwdefaults__, "batch_size", 2)
    started = []
    original_launch = SyncAlongside._launch

    def launch(self):
        started.append(self._locked and self._executor is not None)
        return original_launch(self)

    monkeypatch.setattr(SyncAlongside, "_launch", launch)
    for topic in TOPICS:
        (tmp_path / f"{topic}.txt").write_text(f"Notes on {topic}. Two sentences here.")
    out = StringIO()
    call_command("ingest", str(tmp_path), "--source", "remote", stdout=out, stderr=StringIO())
    assert f"{len(TOPICS)} created" in out.getvalue()
    assert f"embedded {len(TOPICS)} chunks" in out.getvalue()
    assert len(started) > 1 and all(started)
    chunks = Chunk.objects.filter(document__source__name="remote")
    assert chunks.count() == len(TOPICS) and not chunks.exclude(index_status=Chunk.IndexStatus.INDEXED).exists()
