"""Uploaded originals: kept content-addressed, served by GET /api/documents/{id}/file, deleted with the last document."""

from __future__ import annotations

import hashlib
from io import BytesIO, StringIO

import pytest
from django.core.management import call_command
from django.db import transaction

from documents.models import Document, Source
from documents.services import document_ingest
from documents.tests.pdf_writer import make_pdf

pytestmark = pytest.mark.django_db

PDF = make_pdf([["Orchard pruning happens in late winter."], ["Cider apples ripen in October."]])


@pytest.fixture(autouse=True)
def files_dir(settings, tmp_path):
    settings.FILES_DIR = tmp_path / "files"
    return settings.FILES_DIR


def stored_files(files_dir) -> list[str]:
    return sorted(p.name for p in files_dir.rglob("*") if p.is_file())


def upload(client, data: bytes = PDF, name: str = "orchard.pdf", headers=None, **fields):
    handle = BytesIO(data)
    handle.name = name
    return client.post("/api/documents/", {"file": handle, **fields}, headers=headers)


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


def test_an_uploaded_pdf_comes_back_with_its_bytes_type_and_name(api, fresh_store, run_commit_hooks, files_dir):
    with run_commit_hooks():
        created = upload(api, source="uploads")
    assert created.status_code == 201, created.content
    document = Document.objects.get(pk=created.json()["id"])
    assert document.file_sha256 == hashlib.sha256(PDF).hexdigest()
    assert (document.file_name, document.file_type, document.file_size) == ("orchard.pdf", "application/pdf", len(PDF))

    response = api.get(f"/api/documents/{document.pk}/file")
    assert response.status_code == 200
    assert body_of(response) == PDF
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'inline; filename="orchard.pdf"'
    assert response["X-Content-Type-Options"] == "nosniff"
    # With a trailing slash and with a client that asks for the PDF type by name, too.
    assert api.get(f"/api/documents/{document.pk}/file/", HTTP_ACCEPT="application/pdf").status_code == 200
    assert stored_files(files_dir) == [document.file_sha256]


def test_an_uploaded_html_file_downloads_and_cannot_run_script(api, fresh_store, run_commit_hooks):
    page = (
        b"<html><head><title>Hives</title></head><body><p>Bees keep the hive warm.</p>"
        b"<script>alert(1)</script></body></html>"
    )
    with run_commit_hooks():
        document_id = upload(api, page, "hives.html").json()["id"]
    response = api.get(f"/api/documents/{document_id}/file")
    assert response.status_code == 200 and body_of(response) == page
    assert response["Content-Type"] == "text/html"
    assert response["Content-Disposition"] == 'attachment; filename="hives.html"'
    assert response["Content-Security-Policy"] == "sandbox"


def test_reading_the_file_takes_the_same_permission_as_reading_the_document(
    client, api_key, fresh_store, run_commit_hooks, settings
):
    settings.SEARCH_PUBLIC = False
    with run_commit_hooks():
        document_id = upload(client, headers={"Authorization": f"Bearer {api_key('write')}"}).json()["id"]
    assert client.get(f"/api/documents/{document_id}/").status_code == 401
    assert client.get(f"/api/documents/{document_id}/file").status_code == 401
    reader = {"HTTP_AUTHORIZATION": f"Bearer {api_key('read')}"}
    assert client.get(f"/api/documents/{document_id}/", **reader).status_code == 200
    assert client.get(f"/api/documents/{document_id}/file", **reader).status_code == 200
    settings.SEARCH_PUBLIC = True
    assert client.get(f"/api/documents/{document_id}/file").status_code == 200


def test_a_document_without_an_original_and_an_unknown_id_are_404s(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        text_id = api.post(
            "/api/documents/", {"title": "Tea", "text": "Green tea is steamed."}, content_type="application/json"
        ).json()["id"]
    response = api.get(f"/api/documents/{text_id}/file")
    assert response.status_code == 404
    assert "no original file" in response.json()["error"]["message"]
    for missing in ("999999", "abc", "99999999999999999999999", "..%2F..%2Fsecret_key"):
        assert api.get(f"/api/documents/{missing}/file").status_code == 404


def test_the_same_bytes_in_two_documents_are_stored_once(api, fresh_store, run_commit_hooks, files_dir):
    with run_commit_hooks():
        first = upload(api, source="a").json()["id"]
        second = upload(api, source="b", name="copy.pdf").json()["id"]
    assert first != second
    assert stored_files(files_dir) == [hashlib.sha256(PDF).hexdigest()]
    assert api.get(f"/api/documents/{second}/file")["Content-Disposition"] == 'inline; filename="copy.pdf"'


def test_deleting_a_document_removes_its_file_once_no_other_document_names_it(
    api, fresh_store, run_commit_hooks, files_dir
):
    with run_commit_hooks():
        first = upload(api, source="a").json()["id"]
        second = upload(api, source="b").json()["id"]
        assert api.delete(f"/api/documents/{first}/").status_code == 204
    assert len(stored_files(files_dir)) == 1
    assert body_of(api.get(f"/api/documents/{second}/file")) == PDF
    with run_commit_hooks():
        assert api.delete(f"/api/documents/{second}/").status_code == 204
    assert stored_files(files_dir) == []


def test_deleting_a_source_removes_its_documents_files(api, fresh_store, run_commit_hooks, files_dir):
    with run_commit_hooks():
        upload(api, source="a")
        upload(api, b"Bees keep the hive warm in winter.", "bees.txt", source="a")
    assert len(stored_files(files_dir)) == 2
    with run_commit_hooks():
        assert api.delete(f"/api/sources/{Source.objects.get(name='a').pk}/").status_code == 204
    assert stored_files(files_dir) == []


def test_new_bytes_for_the_same_url_replace_the_old_file(fresh_store, run_commit_hooks, files_dir):
    source = Source.objects.create(name="uploads")
    other = make_pdf([["Pear trees flower before apple trees."]])
    with run_commit_hooks():
        document_ingest(source=source, url="file:///orchard.pdf", data=PDF, filename="orchard.pdf", keep_file=True)
        result = document_ingest(
            source=source, url="file:///orchard.pdf", data=other, filename="orchard.pdf", keep_file=True
        )
    assert result.changed
    assert stored_files(files_dir) == [hashlib.sha256(other).hexdigest()]


def test_an_upload_over_the_size_limit_stores_no_file(api, settings, files_dir):
    settings.INGEST_MAX_BYTES = 2048
    response = upload(api, b"Bees. " * 1000, "big.txt")
    assert response.status_code == 413
    assert stored_files(files_dir) == [] and Document.objects.count() == 0


def test_the_ingest_command_and_the_admin_keep_the_original(
    staff_client, tmp_path, fresh_store, run_commit_hooks, files_dir
):
    path = tmp_path / "orchard.pdf"
    path.write_bytes(PDF)
    call_command("ingest", str(path), "--no-embed", stdout=StringIO(), stderr=StringIO())
    from_command = Document.objects.get(url=path.resolve().as_uri())
    assert from_command.file_name == "orchard.pdf" and from_command.file_sha256 == hashlib.sha256(PDF).hexdigest()

    notes = b"Hives need shade in the afternoon."
    handle = BytesIO(notes)
    handle.name = "notes.txt"
    source = Source.objects.get(name="uploads")
    with run_commit_hooks():
        response = staff_client.post(
            "/admin/documents/document/add/",
            {"source": source.pk, "file": handle, "title": "", "url": "", "metadata": "{}"},
        )
    assert response.status_code == 302, response.content
    from_admin = Document.objects.get(file_name="notes.txt")
    assert body_of(staff_client.get(f"/api/documents/{from_admin.pk}/file")) == notes
    assert len(stored_files(files_dir)) == 2


def test_re_uploading_unchanged_content_attaches_the_original_to_a_document_that_had_none(
    fresh_store, run_commit_hooks, files_dir
):
    source = Source.objects.create(name="uploads")
    with run_commit_hooks():
        before = document_ingest(
            source=source, url="file:///notes.txt", data=b"Hives need shade.", filename="notes.txt"
        )
        again = document_ingest(
            source=source, url="file:///notes.txt", data=b"Hives need shade.", filename="notes.txt", keep_file=True
        )
    assert before.document.file_sha256 == "" and not again.changed
    assert Document.objects.get(pk=before.document.pk).file_sha256 == hashlib.sha256(b"Hives need shade.").hexdigest()


def test_files_sweep_deletes_the_file_of_an_ingest_that_rolled_back(fresh_store, files_dir):
    source = Source.objects.create(name="uploads")
    with pytest.raises(RuntimeError), transaction.atomic():
        document_ingest(source=source, data=PDF, filename="orchard.pdf", keep_file=True)
        raise RuntimeError("the request failed after storing")
    assert Document.objects.count() == 0 and len(stored_files(files_dir)) == 1
    out = StringIO()
    call_command("files_sweep", stdout=out)
    assert "1 file" in out.getvalue()
    assert stored_files(files_dir) == []
