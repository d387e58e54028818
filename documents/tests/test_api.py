"""The REST API for sources, documents and chunks, through HTTP (Django's test client)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.db import connection

from documents.models import Chunk, Document, Source

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.django_db


def post_text(client, **body):
    body.setdefault("title", "Tea")
    body.setdefault("text", "Green tea is steamed soon after picking. Black tea is fully oxidised.")
    return client.post("/api/documents/", body, content_type="application/json")


def error(response):
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"]), body
    return body["error"]


def test_creating_a_document_from_json_returns_it_with_its_chunk_count(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        response = post_text(api, source="notes", url="https://example.com/tea", metadata={"lang": "en"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] > 0 and body["chunk_count"] >= 1 and body["created"] is True
    assert body["source"] == "notes" and body["metadata"] == {"lang": "en"}
    assert Source.objects.get(name="notes").kind == Source.Kind.API
    assert fresh_store.count() == body["chunk_count"]


def test_posting_identical_content_again_changes_nothing(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        first = post_text(api, url="https://example.com/tea").json()
        again = post_text(api, url="https://example.com/tea")
    assert again.status_code == 200
    assert again.json()["id"] == first["id"] and again.json()["changed"] is False
    assert Document.objects.count() == 1


def test_uploading_a_file_as_multipart(api, fresh_store, run_commit_hooks):
    with (FIXTURES / "guide.md").open("rb") as handle, run_commit_hooks():
        response = api.post("/api/documents/", {"file": handle, "source": "uploads", "metadata": '{"kind": "guide"}'})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["title"] == "Beekeeping Basics" and body["mime_type"] == "text/markdown"
    assert body["metadata"]["kind"] == "guide" and body["metadata"]["filename"] == "guide.md"
    assert Source.objects.get(name="uploads").kind == Source.Kind.UPLOAD  # a file, not text over the API


def test_document_detail_includes_its_chunks(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        created = post_text(api).json()
    response = api.get(f"/api/documents/{created['id']}/")
    assert response.status_code == 200
    body = response.json()
    assert body["text"].startswith("Green tea")
    assert len(body["chunks"]) == created["chunk_count"]
    assert body["chunks"][0]["index_status"] == "indexed"


def test_listing_documents_filters_by_source_and_full_text(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        post_text(api, source="a", title="Tea", text="Green tea is steamed.")
        post_text(api, source="b", title="Coffee", text="Coffee beans are roasted.")
    assert api.get("/api/documents/").json()["count"] == 2
    only_b = api.get("/api/documents/", {"source": "b"}).json()
    assert [d["title"] for d in only_b["results"]] == ["Coffee"]
    roasted = api.get("/api/documents/", {"q": "roasting"}).json()
    assert [d["title"] for d in roasted["results"]] == ["Coffee"]
    source_b = Source.objects.get(name="b")
    assert api.get("/api/documents/", {"source": str(source_b.pk)}).json()["count"] == 1


def test_deleting_a_document_removes_it_and_its_points(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        doc = post_text(api).json()
        response = api.delete(f"/api/documents/{doc['id']}/")
    assert response.status_code == 204
    assert not Document.objects.exists() and fresh_store.count() == 0


def test_chunks_are_listed_read_only(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        doc = post_text(api).json()
    listing = api.get("/api/chunks/", {"document": doc["id"]}).json()
    assert listing["count"] == doc["chunk_count"]
    chunk_id = listing["results"][0]["id"]
    assert api.get(f"/api/chunks/{chunk_id}/").status_code == 200
    assert api.delete(f"/api/chunks/{chunk_id}/").status_code == 405


def test_sources_can_be_created_listed_changed_and_deleted(api, fresh_store, run_commit_hooks):
    created = api.post("/api/sources/", {"name": "handbook", "kind": "upload"}, content_type="application/json")
    assert created.status_code == 201
    sid = created.json()["id"]
    assert api.get("/api/sources/").json()["results"][0]["name"] == "handbook"
    patched = api.patch(f"/api/sources/{sid}/", {"metadata": {"team": "docs"}}, content_type="application/json")
    assert patched.json()["metadata"] == {"team": "docs"}
    duplicate = api.post("/api/sources/", {"name": "handbook"}, content_type="application/json")
    assert duplicate.status_code == 400 and "name" in error(duplicate)["fields"]
    with run_commit_hooks():
        post_text(api, source="handbook")
        assert api.delete(f"/api/sources/{sid}/").status_code == 204
    assert not Document.objects.exists() and fresh_store.count() == 0


# --- bad input ---------------------------------------------------------------------------------


def test_missing_document_is_404_with_a_json_body(api):
    response = api.get("/api/documents/999999/")
    assert response.status_code == 404 and error(response)["code"] == "not_found"
    assert error(api.get("/api/no-such-endpoint/"))["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "text": "   "}, "text"),
        ({"title": "x"}, "text"),
        ({"title": "x", "text": "ok", "metadata": [1, 2]}, "metadata"),
        ({"title": "x", "text": "ok", "metadata": {"k": "a\u0000b"}}, "metadata"),  # jsonb cannot hold NUL
        ({"title": "x", "text": "ok", "url": "ftp://example.com/x"}, "url"),
        ({"title": "x" * 1001, "text": "ok"}, "title"),
        ({"title": "x", "text": "ok", "source": ""}, "source"),
    ],
)
def test_invalid_document_input_is_a_400_naming_the_field(api, body, field):
    response = api.post("/api/documents/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in error(response)["fields"]
    assert not Document.objects.exists() and not Source.objects.exclude(name="api").exists()


def test_binary_junk_and_unsupported_types_are_rejected_naming_the_file(api):
    with (FIXTURES / "junk.bin").open("rb") as junk:
        response = api.post("/api/documents/", {"file": junk})
    assert response.status_code == 400 and "file" in error(response)["fields"]
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = api.post("/api/documents/", {"file": SimpleUploadedFile("x.png", png, content_type="image/png")})
    assert response.status_code == 400 and "file" in error(response)["fields"]
    assert not Document.objects.exists()


def test_content_over_the_size_limit_is_413(api, settings):
    settings.INGEST_MAX_BYTES = 2048
    response = post_text(api, text="word " * 1000)
    assert response.status_code == 413
    assert "INGEST_MAX_BYTES" in error(response)["message"] and "text" in error(response)["fields"]


def test_malformed_json_is_a_400(api):
    response = api.post("/api/documents/", "{not json", content_type="application/json")
    assert response.status_code == 400 and error(response)["code"] == "parse_error"


def test_a_failed_write_leaves_earlier_data_intact(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        first = post_text(api, url="https://example.com/tea").json()
    before = list(Chunk.objects.values_list("id", "text"))
    with (FIXTURES / "junk.bin").open("rb") as junk:
        response = api.post("/api/documents/", {"file": junk, "url": "https://example.com/tea"})
    assert response.status_code == 400
    doc = Document.objects.get(pk=first["id"])
    assert doc.text.startswith("Green tea") and list(Chunk.objects.values_list("id", "text")) == before


@pytest.mark.django_db(transaction=True)
def test_concurrent_ingests_of_the_same_url_produce_one_document(api_key, client, fresh_store):
    from django.test import Client

    key = api_key("write")
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        c = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
        barrier.wait()
        r = c.post(
            "/api/documents/",
            {
                "title": "Same",
                "text": f"Version {n % 2} of the same page about tea.",
                "url": "https://example.com/same",
            },
            content_type="application/json",
        )
        statuses.append(r.status_code)
        connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses)[0] in (200, 201) and all(s in (200, 201) for s in statuses), statuses
    assert statuses.count(201) == 1
    assert Document.objects.filter(url="https://example.com/same").count() == 1


# --- sources by id or name -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["²", "٣", "99999999999999999999"])
def test_a_source_filter_that_is_no_id_is_a_name_and_finds_nothing_instead_of_failing(api, value):
    Source.objects.create(name="notes")
    response = api.get("/api/documents/", {"source": value})
    assert response.status_code == 200, response.content
    assert response.json()["count"] == 0


def test_documents_are_filtered_by_a_source_named_with_digits_or_by_its_id(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        post_text(api, source="²", title="Squared")
        post_text(api, source="notes", title="Notes", text="Other text entirely.")
    squared = Source.objects.get(name="²")
    by_name = api.get("/api/documents/", {"source": "²"}).json()
    by_id = api.get("/api/documents/", {"source": str(squared.pk)}).json()
    assert [d["title"] for d in by_name["results"]] == [d["title"] for d in by_id["results"]] == ["Squared"]
