"""Concurrent writers on one document, through the live HTTP server.

Each round stores a document, then releases two to four writers on it at once (a barrier) from
threads with their own HTTP connections: PATCH, re-ingest, DELETE, source DELETE, create. Every
answer must be 2xx, 404 or 409; afterwards the database and the vector store must agree with
exactly one writer's version: the document's text is one a writer sent, its chunks are what the
chunker makes of that text, each chunk's context follows the document's current title, every
chunk is indexed and has exactly one point (whose payload carries that title), no point is left
without a chunk, and a document or source whose DELETE was answered 204 is gone.

The live server runs tasks inline (TASKS_BACKEND=immediate): the vector sync and point deletions
run in the request threads after each commit, so they race each other as the worker's do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx
import pytest

from documents.models import Chunk, Document, Source
from documents.services import _document_hash, _document_prepare, _sha256, chunk_context, embedding_input
from vectors.embedders import get_embedder

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROUNDS = 12
ALLOWED = {200, 201, 202, 204, 404, 409}

PARAGRAPH = (
    "The {word} harvest begins when the leaves are young and the weather is dry. Pickers take the bud and two "
    "leaves, which are withered in the shade, rolled by hand and left to oxidise before they are fired. "
)


def text_version(word: str) -> str:
    return "\n\n".join(PARAGRAPH.format(word=f"{word} {i}") * 3 for i in range(3))


TEXTS = {"a": text_version("spring"), "b": text_version("autumn")}
TITLES = ["Tea one", "Tea two"]


@dataclass
class Site:
    url: str
    session_headers: dict
    store: object

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        with httpx.Client(timeout=120) as client:
            return client.request(method, self.url + path, headers=self.session_headers, **kwargs)


@pytest.fixture
def site(live_server, fresh_store, api_key):
    return Site(url=live_server.url, session_headers={"Authorization": f"Bearer {api_key('write')}"}, store=fresh_store)


def released_together(*calls):
    """Run the calls in threads released at the same instant; their responses in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # a dropped connection is a failure too, reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for r in results:
        assert isinstance(r, httpx.Response), f"a writer got no HTTP answer: {r!r}"
        assert r.status_code in ALLOWED, f"{r.request.method} {r.request.url} answered {r.status_code}: {r.text[:500]}"
    return results


def later(site: Site, method: str, path: str, **kwargs):
    """A request to send when the barrier opens."""
    return lambda: site.call(method, path, **kwargs)


def ingest(site: Site, *, source: str, url: str, text: str, title: str):
    return later(site, "POST", "/api/documents/", json={"source": source, "url": url, "title": title, "text": text})


def expected_chunk_texts() -> set[tuple]:
    """For every (title, text) a writer can send: (parsed text, chunk texts, heading paths)."""
    out = set()
    for title in TITLES:
        for text in TEXTS.values():
            prepared = _document_prepare(title=title, text=text, mime="text/plain")
            out.add((prepared.text, tuple(d.text for d in prepared.drafts)))
    return out


def assert_consistent(site: Site, *, deleted_documents=(), deleted_sources=()):
    versions = expected_chunk_texts()
    texts = {text for text, _ in versions}
    for document_id in deleted_documents:
        assert not Document.objects.filter(pk=document_id).exists(), f"document {document_id} came back after its 204"
    for source_id in deleted_sources:
        assert not Source.objects.filter(pk=source_id).exists(), f"source {source_id} came back after its 204"
    chunk_ids = set()
    for document in Document.objects.all():
        chunks = list(document.chunks.order_by("ordinal"))
        assert document.text in texts, f"document {document.pk} holds a text no writer sent"
        assert (document.text, tuple(c.text for c in chunks)) in versions, (
            f"document {document.pk}: its chunks are not what its text chunks into"
        )
        assert document.content_hash == _document_hash(document.title, document.text, document.metadata)
        for chunk in chunks:
            assert chunk.context == chunk_context(document.title, chunk.heading_path), "a chunk kept an old title"
            assert chunk.content_hash == _sha256(embedding_input(chunk, chunk.context))
            assert chunk.index_status == Chunk.IndexStatus.INDEXED, (chunk.index_status, chunk.last_error)
        chunk_ids.update(str(c.pk) for c in chunks)
        hits = site.store.search([1.0] * get_embedder().dimension, limit=1000, document_ids=[document.pk])
        assert {h.id for h in hits} == {str(c.pk) for c in chunks}, f"document {document.pk}: points != chunks"
        assert {h.payload.get("title") for h in hits} <= {document.title}, "a point carries an old title"
    points = {i for ids in site.store.iter_ids() for i in ids}
    assert points == chunk_ids, f"{len(points - chunk_ids)} orphan points, {len(chunk_ids - points)} missing"


def stored_document(site: Site, *, source: str, url: str, text: str = TEXTS["a"], title: str = TITLES[0]) -> int:
    response = ingest(site, source=source, url=url, text=text, title=title)()
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def test_delete_beside_patch_never_fails_and_the_delete_stays(site):
    for n in range(ROUNDS):
        doc = stored_document(site, source="race", url=f"https://example.com/patch-delete/{n}")
        patch, delete = released_together(
            later(site, "PATCH", f"/api/documents/{doc}/", json={"title": TITLES[1], "metadata": {"n": n}}),
            later(site, "DELETE", f"/api/documents/{doc}/"),
        )
        assert delete.status_code == 204, delete.text  # only this writer deletes
        assert patch.status_code in (200, 404), patch.text
        assert_consistent(site, deleted_documents=[doc])


def test_delete_beside_reingest_never_fails_and_the_delete_stays(site):
    for n in range(ROUNDS):
        url = f"https://example.com/ingest-delete/{n}"
        doc = stored_document(site, source="race", url=url)
        reingest, delete = released_together(
            ingest(site, source="race", url=url, text=TEXTS["b"], title=TITLES[0]),
            later(site, "DELETE", f"/api/documents/{doc}/"),
        )
        assert delete.status_code == 204, delete.text
        survivor = Document.objects.filter(url=url).first()
        if reingest.status_code == 200:
            # The re-ingest changed the document and then the delete removed it.
            assert reingest.json()["id"] == doc and survivor is None
        else:
            # The delete came first; the re-ingest stored the url again as a new document.
            assert reingest.status_code == 201 and survivor is not None and survivor.pk != doc
            assert survivor.text == _document_prepare(title=TITLES[0], text=TEXTS["b"], mime="text/plain").text
        assert_consistent(site, deleted_documents=[doc])


def test_patch_beside_reingest_keeps_text_and_chunks_of_one_version(site):
    for n in range(ROUNDS):
        url = f"https://example.com/patch-ingest/{n}"
        doc = stored_document(site, source="race", url=url)
        patch, reingest = released_together(
            later(site, "PATCH", f"/api/documents/{doc}/", json={"title": TITLES[1]}),
            ingest(site, source="race", url=url, text=TEXTS["b"], title=TITLES[0]),
        )
        assert patch.status_code == 200 and reingest.status_code == 200, (patch.text, reingest.text)
        document = Document.objects.get(pk=doc)
        # Whichever came last, the re-ingested text is there: a PATCH never writes text back.
        assert document.text == _document_prepare(title=TITLES[0], text=TEXTS["b"], mime="text/plain").text
        assert_consistent(site)


def test_every_writer_at_once_on_one_document_leaves_one_version(site):
    for n in range(ROUNDS):
        source_name = f"mix-{n}"
        url = f"https://example.com/mix/{n}"
        doc = stored_document(site, source=source_name, url=url)
        source_id = Document.objects.get(pk=doc).source_id
        responses = released_together(
            ingest(site, source=source_name, url=url, text=TEXTS["b"], title=TITLES[1]),
            ingest(site, source=source_name, url=url, text=TEXTS["a"], title=TITLES[0]),
            later(site, "PATCH", f"/api/documents/{doc}/", json={"title": TITLES[1], "metadata": {"n": n}}),
            later(site, "DELETE", f"/api/documents/{doc}/"),
            later(site, "DELETE", f"/api/sources/{source_id}/"),
        )
        deleted_documents = [doc] if 204 in (responses[3].status_code, responses[4].status_code) else []
        deleted_sources = [source_id] if responses[4].status_code == 204 else []
        assert deleted_documents, "the document's own DELETE or its source's DELETE must succeed"
        assert_consistent(site, deleted_documents=deleted_documents, deleted_sources=deleted_sources)


def test_patch_refuses_fields_it_does_not_change(site):
    doc = stored_document(site, source="race", url="https://example.com/refuse")
    response = site.call("PATCH", f"/api/documents/{doc}/", json={"text": "new text", "url": "https://x.example/"})
    assert response.status_code == 400
    body = response.json()
    assert "text" in str(body) and "url" in str(body), body
    assert (
        Document.objects.get(pk=doc).text == _document_prepare(title=TITLES[0], text=TEXTS["a"], mime="text/plain").text
    )


def test_patch_of_a_deleted_document_is_404_and_does_not_bring_it_back(site):
    doc = stored_document(site, source="race", url="https://example.com/gone")
    assert site.call("DELETE", f"/api/documents/{doc}/").status_code == 204
    assert site.call("PATCH", f"/api/documents/{doc}/", json={"title": "back?"}).status_code == 404
    assert site.call("DELETE", f"/api/documents/{doc}/").status_code == 404
    assert not Document.objects.filter(pk=doc).exists()


def test_marking_chunks_survives_a_deadlock_with_a_writer_locking_them_the_other_way(site):
    """The sync marks chunks without holding their document; a transaction that locks the same
    chunks in the opposite order (a bulk UPDATE such as vectors_repair's, a manual one) deadlocks
    with it, and the sync must retry rather than fail."""
    import psycopg
    from django.db import connection

    from vectors import sync

    doc = stored_document(site, source="race", url="https://example.com/deadlock")
    chunks = sorted(Chunk.objects.filter(document_id=doc), key=lambda c: str(c.pk))
    assert len(chunks) >= 2
    low, high = str(chunks[0].pk), str(chunks[-1].pk)
    Chunk.objects.filter(pk__in=[c.pk for c in chunks]).update(index_status=Chunk.IndexStatus.PENDING)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        sync_pid = cursor.fetchone()[0]
    other = psycopg.connect(**connection.get_connection_params())

    def reverse_order_writer():
        try:
            with other.transaction():
                other.execute("SELECT 1 FROM documents_chunk WHERE id = %s FOR UPDATE", [high])
                holding.set()
                # Wait until the mark waits for `high`, then take `low`, which the mark holds.
                for _ in range(200):
                    waiting = other.execute(
                        "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [sync_pid]
                    ).fetchone()[0]
                    if waiting:
                        break
                    threading.Event().wait(0.05)
                other.execute("SELECT 1 FROM documents_chunk WHERE id = %s FOR UPDATE", [low])
        except psycopg.errors.DeadlockDetected:
            pass  # PostgreSQL may pick this side to abort instead; then the mark goes through at once

    holding = threading.Event()
    writer = threading.Thread(target=reverse_order_writer)
    writer.start()
    assert holding.wait(30)
    marked = sync.mark(chunks, Chunk.IndexStatus.INDEXED)
    writer.join(60)
    other.close()
    assert marked == len(chunks)
    assert set(Chunk.objects.filter(document_id=doc).values_list("index_status", flat=True)) == {"indexed"}
