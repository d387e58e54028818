"""The vector sync under faults: refused points, poisoned rows, outages, crashes, drift.

Real PostgreSQL, the real embedded store (qdrant-edge), the real local model or a real
OpenAI-compatible HTTP server, and real processes killed with SIGKILL where the fault is a crash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from documents.models import Chunk, Document, Source
from documents.services import document_ingest, document_rechunk, document_reembed
from ragsite.tests.openai_server import embeddings_handler, error_reply
from vectors.models import EmbeddingCache
from vectors.repair import VectorsHealer, documents_mismatched
from vectors.sync import vectors_sync_pending

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "documents" / "tests" / "fixtures"  # the parsers' sample files


@pytest.fixture
def source(db):
    return Source.objects.create(name="library")


@pytest.fixture
def openai_embedder(settings, openai_server):
    settings.EMBEDDING_BACKEND = "openai"
    settings.EMBEDDING_MODEL = "text-embedding-3-small"
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_MAX_RETRIES = 0
    return openai_server


def point_ids(store) -> set[str]:
    return {i for ids in store.iter_ids(batch_size=500) for i in ids}


def nested(depth: int) -> dict:
    value: object = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[return-value]


def statuses(document) -> list[str]:
    return list(document.chunks.order_by("ordinal").values_list("index_status", flat=True))


def add(source, title: str, text: str, **kwargs):
    return document_ingest(source=source, title=title, text=text, **kwargs).document


# --- refused points and poisoned rows ---------------------------------------------------------------


def test_a_point_the_store_refuses_fails_only_its_chunk_and_the_batch_goes_on(source, fresh_store):
    docs = [add(source, f"Doc {n}", f"Paragraph {n} about gardening and tea number {n}.") for n in range(5)]
    vectors_sync_pending()
    bad = docs[2].chunks.get()
    # A corrupt cached vector (all zeros has no direction): the store refuses that one point.
    EmbeddingCache.objects.filter(content_hash=bad.content_hash).update(vector=np.zeros(384, "<f4").tobytes())
    Chunk.objects.update(index_status=Chunk.IndexStatus.PENDING)

    report = vectors_sync_pending()

    bad.refresh_from_db()
    assert bad.index_status == Chunk.IndexStatus.FAILED and "zero" in bad.last_error
    assert Chunk.objects.filter(index_status=Chunk.IndexStatus.INDEXED).count() == 4
    assert report.indexed == 4 and report.failed == 1 and not report.stopped_by


def test_deep_metadata_in_the_database_breaks_neither_search_nor_later_syncs(source, fresh_store, api):
    assert fresh_store.engine == "edge"  # the engine whose write-ahead log it poisoned
    healthy = add(source, "Healthy", "Bees remember the flowers they visited and fly straight back.")
    poisoned = add(source, "Poisoned", "Poisoned metadata sits on this short note about honey.")
    vectors_sync_pending()
    # As if validation had been bypassed: the row itself holds 130 levels.
    Document.objects.filter(pk=poisoned.pk).update(metadata={"deep": nested(130), "lang": "en"})
    document_reembed(document=poisoned)
    vectors_sync_pending()
    assert set(statuses(poisoned)) == {Chunk.IndexStatus.INDEXED}

    response = api.get("/api/search/", {"q": "which flowers do bees remember", "mode": "semantic"})
    assert response.status_code == 200, response.content
    assert healthy.pk in {hit["document_id"] for hit in response.json()["results"]}
    assert api.get("/api/search/", {"q": "honey", "mode": "semantic", "metadata": "lang:en"}).json()["count"] == 1

    later = add(source, "Later", "A later document about beekeeping in the spring.")
    vectors_sync_pending()
    assert set(statuses(later)) == {Chunk.IndexStatus.INDEXED}
    out = StringIO()
    call_command("vectors_sync", stdout=out)
    assert "0 points with no chunk" in out.getvalue()
    assert point_ids(fresh_store) == {str(pk) for pk in Chunk.objects.values_list("pk", flat=True)}


# --- outages and retries ----------------------------------------------------------------------------------


def test_an_embedder_outage_leaves_chunks_pending_and_the_healer_indexes_them_once_it_is_back(
    source, fresh_store, openai_embedder, settings
):
    openai_embedder.route("/v1/embeddings", lambda server, request: error_reply(503))
    doc = add(source, "Outage", "Written while the embedding server was down.")
    report = vectors_sync_pending()
    assert report.stopped_by and set(statuses(doc)) == {Chunk.IndexStatus.PENDING}
    assert "unavailable" in doc.chunks.get().last_error.lower()
    assert doc.chunks.get().sync_attempts == 0  # an outage is not the document's fault

    healer = VectorsHealer(threading.Event())
    waits = [healer.tick(), healer.tick(), healer.tick()]
    assert waits == [
        settings.VECTORS_RETRY_INTERVAL * 2,
        settings.VECTORS_RETRY_INTERVAL * 4,
        settings.VECTORS_RETRY_INTERVAL * 8,
    ]
    assert set(statuses(doc)) == {Chunk.IndexStatus.PENDING}

    openai_embedder.route("/v1/embeddings", embeddings_handler)  # back, and no new document arrives
    assert healer.tick() == settings.VECTORS_RETRY_INTERVAL
    assert set(statuses(doc)) == {Chunk.IndexStatus.INDEXED}
    assert point_ids(fresh_store) == {str(doc.chunks.get().pk)}


def test_failed_chunks_are_retried_by_the_healer_after_their_backoff(source, fresh_store, settings):
    doc = add(source, "Flaky", "A paragraph whose cached vector was corrupt for a while.")
    vectors_sync_pending()
    chunk = doc.chunks.get()
    good = bytes(EmbeddingCache.objects.get(content_hash=chunk.content_hash).vector)
    EmbeddingCache.objects.filter(content_hash=chunk.content_hash).update(vector=np.zeros(384, "<f4").tobytes())
    document_reembed(document=doc)
    vectors_sync_pending()
    chunk.refresh_from_db()
    assert chunk.index_status == Chunk.IndexStatus.FAILED and chunk.sync_retry_at is not None

    EmbeddingCache.objects.filter(content_hash=chunk.content_hash).update(vector=good)
    healer = VectorsHealer(threading.Event())
    healer.tick()  # the first round is the drift check plus retries that are due: this one is not yet
    chunk.refresh_from_db()
    assert chunk.index_status == Chunk.IndexStatus.FAILED

    Chunk.objects.filter(pk=chunk.pk).update(sync_retry_at=chunk.sync_retry_at.replace(year=2000))
    healer.tick()
    chunk.refresh_from_db()
    assert chunk.index_status == Chunk.IndexStatus.INDEXED and chunk.sync_attempts == 0


def test_a_document_that_keeps_failing_is_quarantined_and_not_retried_until_reembedded(source, fresh_store, settings):
    doc = add(source, "Cursed", "Every sync of this text fails the same way.")
    other = add(source, "Fine", "Another document that is perfectly fine to embed.")
    vectors_sync_pending()
    chunk = doc.chunks.get()
    good = bytes(EmbeddingCache.objects.get(content_hash=chunk.content_hash).vector)
    EmbeddingCache.objects.filter(content_hash=chunk.content_hash).update(vector=np.zeros(384, "<f4").tobytes())
    document_reembed(document=doc)
    healer = VectorsHealer(threading.Event())
    for _ in range(settings.VECTORS_SYNC_MAX_ATTEMPTS + 2):
        Chunk.objects.filter(document=doc).update(sync_retry_at=None)  # every backoff has passed
        healer.tick()
    chunk.refresh_from_db()
    assert chunk.index_status == Chunk.IndexStatus.FAILED
    assert chunk.last_error.startswith("quarantined") and "zero" in chunk.last_error
    assert chunk.sync_attempts == settings.VECTORS_SYNC_MAX_ATTEMPTS
    assert set(statuses(other)) == {Chunk.IndexStatus.INDEXED}
    out = StringIO()
    call_command("vectors_sync", stdout=out)
    assert "1 quarantined chunks" in out.getvalue()
    chunk.refresh_from_db()
    assert chunk.index_status == Chunk.IndexStatus.FAILED  # the operator's repair skips it too

    EmbeddingCache.objects.filter(content_hash=chunk.content_hash).update(vector=good)
    document_reembed(document=doc)  # the explicit way back
    vectors_sync_pending()
    assert set(statuses(doc)) == {Chunk.IndexStatus.INDEXED}


@pytest.mark.django_db(transaction=True)
def test_a_document_that_crashes_the_worker_is_quarantined_after_the_limit_and_the_rest_indexed(
    openai_server, tmp_path, settings
):
    """A real process killed (SIGKILL) while embedding the same document, again and again."""
    source = Source.objects.create(name="crashes")
    poison = add(source, "Poison", "xylophone " * 5 + "makes the embedder process die.")
    others = [add(source, f"Other {n}", f"Harmless note number {n} about tea.") for n in range(3)]
    Chunk.objects.update(index_status=Chunk.IndexStatus.PENDING)  # for the worker process to embed
    hang = threading.Event()

    def hanging(server, request):
        if any("xylophone" in text for text in request.json["input"]):
            hang.set()
            time.sleep(60)  # the process is killed meanwhile
        return embeddings_handler(server, request)

    openai_server.route("/v1/embeddings", hanging)
    db = connection.settings_dict
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
        "DJANGO_SETTINGS_MODULE": "ragsite.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DATA_DIR": str(tmp_path),
        "EMBEDDING_BACKEND": "openai",
        "EMBEDDING_MODEL": "text-embedding-3-small",
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MAX_RETRIES": "0",
        "OPENAI_TIMEOUT": "120",
        "TASKS_BACKEND": "immediate",
    }
    script = "import django; django.setup(); from vectors.sync import vectors_sync_pending as s; print(s())"

    def run() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    limit = settings.VECTORS_SYNC_MAX_ATTEMPTS
    for _ in range(limit):
        hang.clear()
        proc = run()
        assert hang.wait(60), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    proc = run()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    chunk = poison.chunks.get()
    assert chunk.index_status == Chunk.IndexStatus.FAILED and chunk.last_error.startswith("quarantined")
    for doc in others:
        assert set(statuses(doc)) == {Chunk.IndexStatus.INDEXED}
    hang.clear()
    again = run()  # and it stays out: no crash loop on restart
    assert again.wait(120) == 0 and not hang.is_set()


# --- drift between a document's text and its chunks -------------------------------------------------------


def _ingest_fixtures(source) -> list[Document]:
    docs = []
    for name in ("guide.md", "notes.txt", "page.html", "orchard-report.pdf"):
        path = FIXTURES / name
        docs.append(document_ingest(source=source, data=path.read_bytes(), filename=name).document)
    return docs


def test_the_drift_check_finds_no_mismatch_in_ingested_or_rechunked_documents(source, fresh_store):
    docs = _ingest_fixtures(source)
    assert len(docs) == 4
    assert documents_mismatched() == []
    # Re-chunking from the stored text (the repair) gives chunks that the check accepts too.
    for doc in docs:
        document_rechunk(document=doc)
    assert documents_mismatched() == []


def test_vectors_sync_rechunks_a_document_whose_chunks_do_not_match_its_text(source, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        doc = add(
            source, "Race", "# Tea\n\nGreen tea is steamed.\n\n## Black\n\nBlack tea is oxidised.", mime="text/markdown"
        )
        vectors_sync_pending()
    # As a stale full-row save would leave it: another writer's text, these chunks.
    text = "# Tea\n\nGreen tea is pan-fired in China.\n\n## Oolong\n\nOolong is partly oxidised."
    Document.objects.filter(pk=doc.pk).update(text=text)
    assert documents_mismatched() == [doc.pk]

    out = StringIO()
    with run_commit_hooks():
        call_command("vectors_sync", stdout=out)
    assert "1 documents whose chunks do not match their text" in out.getvalue()
    assert documents_mismatched() == []
    chunk_texts = " ".join(doc.chunks.values_list("text", flat=True))
    assert "Oolong" in chunk_texts and "Black tea" not in chunk_texts
    assert set(statuses(doc)) == {Chunk.IndexStatus.INDEXED}
    assert point_ids(fresh_store) == {str(pk) for pk in doc.chunks.values_list("pk", flat=True)}


def test_the_healer_removes_orphan_points_and_repairs_drift_by_itself(source, fresh_store, run_commit_hooks):
    from vectors.embedders import get_embedder
    from vectors.stores import VectorPoint

    with run_commit_hooks():
        doc = add(source, "Kept", "Text that stays, with chunks that will not match it.")
        vectors_sync_pending()
    embedder = get_embedder()
    orphan = "00000000-0000-4000-8000-0000000000aa"  # as a kill -9 between a delete's commit and its point removal
    fresh_store.upsert([VectorPoint(id=orphan, vector=embedder.embed_query("stray"), payload={"document_id": 0})])
    Document.objects.filter(pk=doc.pk).update(text="Entirely different text written by another writer.")

    with run_commit_hooks():
        VectorsHealer(threading.Event()).tick()

    assert orphan not in point_ids(fresh_store)
    assert documents_mismatched() == []
    assert point_ids(fresh_store) == {str(pk) for pk in doc.chunks.values_list("pk", flat=True)}


def test_the_admin_shows_a_quarantined_document(source, fresh_store, staff_client, settings):
    from vectors.quarantine import documents_quarantine

    doc = add(source, "Quarantined one", "Text of a document whose sync kept failing.")
    add(source, "Pending one", "Text of a document still waiting for its vectors.")
    documents_quarantine([doc.pk])

    page = staff_client.get("/admin/documents/document/").content.decode()
    assert "1 quarantined" in page and "1 pending" in page
    detail = staff_client.get(f"/admin/documents/document/{doc.pk}/change/").content.decode()
    assert "quarantined: " in detail and "re-ingested or re-embedded" in detail


@pytest.mark.django_db(transaction=True)
def test_the_worker_process_removes_orphan_points_by_itself_at_start(openai_server, tmp_path):
    """Rows gone, points left (a kill -9 between a delete's commit and its point removal): a
    real `db_worker` owning the embedded store heals it with no operator."""
    from vectors.stores import vector_store_open

    db = connection.settings_dict
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
        "DJANGO_SETTINGS_MODULE": "ragsite.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DATA_DIR": str(tmp_path),
        "EMBEDDING_BACKEND": "openai",
        "EMBEDDING_MODEL": "text-embedding-3-small",
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "test-key",
        "TASKS_BACKEND": "database",
        "LOG_LEVEL": "INFO",
    }
    script = (
        "import django; django.setup()\n"
        "from documents.models import Source\n"
        "from documents.services import document_ingest\n"
        "from vectors.sync import vectors_sync_pending\n"
        "s = Source.objects.create(name='orphans')\n"
        "document_ingest(source=s, title='Gone', text='A document whose rows vanish but whose points stay.')\n"
        "print(vectors_sync_pending().indexed)\n"
    )
    made = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert made.stdout.strip().endswith("1"), made.stderr
    with connection.cursor() as cursor:  # the delete committed; its point removal never ran
        cursor.execute("DELETE FROM documents_chunk")
        cursor.execute("DELETE FROM documents_document")
        cursor.execute("DELETE FROM django_tasks_database_dbtaskresult")

    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "db_worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        reader = threading.Thread(target=lambda: seen.extend(worker.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("points with no chunk removed" in line for line in seen):
            time.sleep(0.2)
        assert any("1 points with no chunk removed" in line for line in seen), "".join(seen)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    store = vector_store_open(collection="ragsite_chunks", path=tmp_path / "qdrant", engine="edge")
    try:
        assert store.count() == 0, "".join(seen)
    finally:
        store.close()
