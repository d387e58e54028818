"""Scans uploaded over HTTP are read by the task worker, not inside the request.

Through the real interfaces: POST /api/documents/ (multipart; single files and .zip members),
GET /api/documents/{id}/ and /progress, keyword search, the database task queue and a real
`manage.py db_worker` process. A scan is checked and kept in the request (202, `processing`, not
searchable), read by OCR in the worker (then `active` and found by its words), or `failed` with
the reason; a text PDF is still ingested in the request. The fast tests never start OCR: their
files fail before it or their reads stop before it; the slow one runs it in the worker.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django_tasks_db.models import DBTaskResult

from documents.files import file_path
from documents.models import Document
from documents.services import document_read
from documents.tasks import document_read_task
from documents.tests import format_fixtures as ff
from documents.tests.pdf_writer import orchard_report_pdf
from ragsite.worker import WorkerStopping, raise_if_stopping, send_worker_started, tasks_reap, worker_stopping

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database_queue(settings):
    """Tasks wait in the database queue for a worker, as in production (the tests run them inline)."""
    settings.TASKS_BACKEND = "database"
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


@pytest.fixture
def upload(api, run_commit_hooks):
    """POST a file as the upload page does; its commit queues what it queues (the read of a scan)."""

    def send(name: str, data: bytes, **fields):
        with run_commit_hooks():
            return api.post("/api/documents/", {"file": SimpleUploadedFile(name, data), "source": "scans", **fields})

    return send


def queued_reads() -> list[list]:
    return [
        task.args_kwargs["args"]
        for task in DBTaskResult.objects.filter(task_path=document_read_task.module_path, status="READY").order_by(
            "enqueued_at"
        )
    ]


def keyword_hits(api, q: str) -> list[dict]:
    response = api.get("/api/search/", {"q": q, "mode": "keyword"})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def progress(api, document_id: int) -> dict:
    response = api.get(f"/api/documents/{document_id}/progress")
    assert response.status_code == 200, response.content
    return response.json()


def corrupt_png() -> bytes:
    """A PNG whose header is sound (type, pixels) but whose image data is cut off."""
    data = ff.render_text_image(["Broken scan"])
    return data[: len(data) // 2]


@pytest.mark.django_db
def test_an_image_is_accepted_as_processing_kept_and_not_searchable_until_read(api, upload, database_queue):
    response = upload("lanterns.png", ff.render_text_image(["Quillfeather lanterns"]), metadata='{"shelf": "b"}')

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "processing" and body["error"] == ""
    assert body["title"] == "lanterns.png" and body["mime_type"] == "image/png"
    assert body["created"] is True and body["chunk_count"] == 0
    assert body["metadata"] == {"shelf": "b", "filename": "lanterns.png"}
    document = Document.objects.get(pk=body["id"])
    assert file_path(document.file_sha256).is_file() and document.file_name == "lanterns.png"
    assert queued_reads() == [[document.pk]]

    assert api.get(f"/api/documents/{document.pk}/").json()["status"] == "processing"
    assert keyword_hits(api, "quillfeather") == []
    # No worker runs in the test: the page says the scan waits for one.
    assert progress(api, document.pk) == {
        "id": document.pk,
        "status": "processing",
        "error": "",
        "reading": {"page": 0, "pages": 1},
        "chunks": 0,
        "indexed": 0,
        "pending": 0,
        "failed": 0,
        "done": False,
        "waiting_for_worker": True,
        "errors": [],
    }


@pytest.mark.django_db
def test_the_same_scan_sent_again_while_it_waits_is_the_same_document(api, upload, database_queue):
    image = ff.render_text_image(["Twice sent"])
    first = upload("twice.png", image)
    again = upload("twice.png", image)

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
    assert Document.objects.count() == 1


@pytest.mark.django_db
def test_an_unreadable_scan_fails_with_its_reason_and_sending_it_again_reads_it_again(api, upload, fresh_store):
    # The test settings' task backend runs the read at once, when the upload commits.
    response = upload("broken.png", corrupt_png())
    assert response.status_code == 202, response.content
    document_id = response.json()["id"]

    failed = progress(api, document_id)
    assert failed["status"] == "failed" and failed["done"] is True and failed["reading"] is None
    assert failed["error"].startswith("The image is corrupt or unreadable"), failed
    detail = api.get(f"/api/documents/{document_id}/").json()
    assert detail["status"] == "failed" and detail["error"] == failed["error"] and detail["chunks"] == []
    # Nothing half-stored; the original is kept, so it can be read again.
    document = Document.objects.get(pk=document_id)
    assert document.text == "" and file_path(document.file_sha256).is_file()

    again = upload("broken.png", corrupt_png())
    assert again.status_code == 202 and again.json()["id"] == document_id
    document.refresh_from_db()
    assert document.status == Document.Status.FAILED and document.reading["attempts"] == 1
    assert Document.objects.count() == 1


@pytest.mark.django_db
def test_a_text_pdf_is_still_ingested_in_the_request(api, upload, database_queue):
    response = upload("orchard-report.pdf", orchard_report_pdf())

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "active" and response.json()["chunk_count"] >= 1
    assert queued_reads() == []
    assert keyword_hits(api, "orchard")


@pytest.mark.django_db
@pytest.mark.parametrize(("pages", "read"), [(2, 2), (12, 10)])
def test_a_scanned_pdf_is_deferred_with_the_pages_ocr_will_read(api, upload, database_queue, pages, read):
    scan = ff.make_scanned_pdf([[f"Page {n}"] for n in range(1, pages + 1)])

    response = upload("scan.pdf", scan)

    assert response.status_code == 202, response.content
    assert response.json()["mime_type"] == "application/pdf"
    assert progress(api, response.json()["id"])["reading"] == {"page": 0, "pages": read}


@pytest.mark.django_db
def test_images_too_large_are_still_refused_in_the_request(api, upload, database_queue):
    from documents.tests.test_format_uploads import _huge_png

    response = upload("huge.png", _huge_png())

    assert response.status_code == 400, response.content
    assert re.search("megapixels|too large to decode", response.json()["error"]["message"])
    assert not Document.objects.exists() and queued_reads() == []


def tiff_with_a_damaged_second_page() -> bytes:
    data = bytearray(two_page_tiff(["First"], ["Second"]))
    first = struct.unpack_from("<I", data, 4)[0]  # the first page's directory
    entries = struct.unpack_from("<H", data, first)[0]
    struct.pack_into("<I", data, first + 2 + 12 * entries, len(data) + 1000)  # the next one: past the end
    return bytes(data)


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow on the damaged file, as intended
def test_a_tiff_whose_pages_cannot_be_counted_is_refused_in_the_request(api, upload, database_queue):
    response = upload("damaged.tif", tiff_with_a_damaged_second_page())

    assert response.status_code == 400, response.content
    assert response.json()["error"]["fields"] == {"file": [response.json()["error"]["message"]]}
    assert response.json()["error"]["message"].startswith("The image is corrupt or unreadable")
    assert not Document.objects.exists() and queued_reads() == []


@pytest.mark.django_db
def test_a_zip_reports_its_scans_processing_and_ingests_its_text(api, upload, database_queue):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("notes/tea.md", "# Tea\n\nGreen tea from the quillbrook valley is steamed.\n")
        out.writestr("scans/receipt.png", ff.render_text_image(["Receipt"]))

    response = upload("bundle.zip", archive.getvalue())

    assert response.status_code == 201, response.content
    files = {f["name"]: f for f in response.json()["files"]}
    assert files["notes/tea.md"]["status"] == "ingested"
    scan = files["scans/receipt.png"]
    assert scan["status"] == "processing" and scan["created"] is True and scan["chunks"] == 0
    assert response.json()["totals"]["processing"] == 1
    assert Document.objects.get(pk=scan["document_id"]).status == Document.Status.PROCESSING
    assert queued_reads() == [[scan["document_id"]]]

    only_scans = io.BytesIO()
    with zipfile.ZipFile(only_scans, "w") as out:
        out.writestr("another.png", ff.render_text_image(["Another receipt"]))
    assert upload("scans.zip", only_scans.getvalue()).status_code == 202


@pytest.mark.django_db
def test_progress_names_the_page_ocr_is_on_and_a_stopping_worker_hands_the_read_back_uncounted(
    api, upload, database_queue
):
    document_id = upload("stop.png", ff.render_text_image(["Stop here"])).json()["id"]
    seen = []

    def stop_at_the_page(page: int) -> None:
        # Called as OCR is about to read the page: the progress names it; then the worker stops.
        seen.append((page, progress(api, document_id)["reading"]))
        raise_if_stopping()

    worker_stopping.set()
    try:
        with pytest.raises(WorkerStopping):
            document_read(document_id, on_page=stop_at_the_page)
        with pytest.raises(WorkerStopping):
            document_read_task.call(document_id)  # the task's own check between pages
    finally:
        worker_stopping.clear()

    assert seen == [(1, {"page": 1, "pages": 1})]
    document = Document.objects.get(pk=document_id)
    assert document.status == Document.Status.PROCESSING and document.reading["attempts"] == 0
    assert progress(api, document_id)["reading"] == {"page": 0, "pages": 1}


@pytest.mark.django_db
def test_a_worker_start_queues_lost_reads_and_reads_cut_short_too_often_fail(api, upload, database_queue, settings):
    document_id = upload("lost.png", ff.render_text_image(["Lost read"])).json()["id"]
    DBTaskResult.objects.all().delete()  # its queueing was lost (a crash between commit and enqueue)

    send_worker_started()
    send_worker_started()
    assert queued_reads() == [[document_id]]

    # Its worker died mid-OCR, each time it ran (the attempts are counted before any work).
    settings.TASKS_MAX_ATTEMPTS = 3
    Document.objects.filter(pk=document_id).update(
        reading={**Document.objects.get(pk=document_id).reading, "attempts": 3}
    )
    assert document_read_task.call(document_id) is None
    failed = progress(api, document_id)
    assert failed["status"] == "failed" and "stopped 3 times" in failed["error"], failed
    DBTaskResult.objects.all().delete()
    send_worker_started()
    assert queued_reads() == []  # failed: not queued again


@pytest.mark.django_db
def test_a_read_whose_worker_died_is_run_again_by_the_next_worker(api, upload, database_queue):
    document_id = upload("again.png", corrupt_png()).json()["id"]
    task = DBTaskResult.objects.get(task_path=document_read_task.module_path)
    # A worker claimed it and died mid-OCR: the attempt was counted, the task left RUNNING.
    DBTaskResult.objects.filter(pk=task.pk).update(status="RUNNING", worker_ids=["host-a:7:gone"])
    Document.objects.filter(pk=document_id).update(
        reading={**Document.objects.get(pk=document_id).reading, "attempts": 1}
    )

    assert tasks_reap()["requeued"] == [str(task.pk)]
    assert queued_reads() == [[document_id]]
    assert document_read_task.call(document_id) is None  # the re-run reads it (and finds it unreadable)
    document = Document.objects.get(pk=document_id)
    assert document.status == Document.Status.FAILED and document.reading["attempts"] == 2
    assert document_read_task.call(document_id) is None  # a duplicate changes nothing
    document.refresh_from_db()
    assert document.status == Document.Status.FAILED and document.reading["attempts"] == 2


# --- A real worker reads the scans (OCR: seconds a page) ------------------------------------------


def worker_env(tmp_path: Path, openai_server, settings) -> dict[str, str]:
    db = connection.settings_dict
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
        "DJANGO_SETTINGS_MODULE": "ragsite.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "DATA_DIR": str(tmp_path),
        "FILES_DIR": str(settings.FILES_DIR),  # the originals the test's uploads kept
        "EMBEDDING_BACKEND": "openai",
        "EMBEDDING_MODEL": "text-embedding-3-small",
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "test-key",
        "TASKS_BACKEND": "database",
        "EMBEDDED_WORKER": "false",
    }


def two_page_tiff(first: list[str], second: list[str]) -> bytes:
    from PIL import Image

    pages = [Image.open(io.BytesIO(ff.render_text_image(lines))) for lines in (first, second)]
    out = io.BytesIO()
    pages[0].save(out, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    return out.getvalue()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_reads_uploaded_scans_and_their_words_are_found_with_their_page(
    api, upload, database_queue, openai_server, settings, tmp_path
):
    png = ff.render_text_image(["The quartermaster counted", "seventeen brass lanterns."])
    photo = upload("lanterns.png", png)
    tiff = upload("ledger.tif", two_page_tiff(["Cover page"], ["Marzipan ledger"]))
    assert photo.status_code == tiff.status_code == 202, (photo.content, tiff.content)
    assert keyword_hits(api, "quartermaster") == []

    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "db_worker", "--batch", "--no-startup-delay", "--interval", "0.2"],
        cwd=ROOT,
        env=worker_env(tmp_path, openai_server, settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr

    for response in (photo, tiff):
        read = progress(api, response.json()["id"])
        assert read["status"] == "active" and read["error"] == "" and read["reading"] is None, (read, done.stderr)
        assert read["chunks"] >= 1
    [hit] = [h for h in keyword_hits(api, "quartermaster") if h["document_id"] == photo.json()["id"]]
    assert hit["page"] is None  # one image: no pages
    ledger = keyword_hits(api, "marzipan")
    # Two short pages are one chunk: it starts on page 1 and spans both.
    assert ledger and ledger[0]["document_id"] == tiff.json()["id"], ledger
    assert ledger[0]["page"] == 1 and ledger[0]["metadata"]["pages"] == [1, 2], ledger[0]
    document = Document.objects.get(pk=photo.json()["id"])
    assert document.title == "lanterns" and document.metadata["ocr"] is True and document.reading == {}

    again = upload("lanterns.png", png)
    assert again.status_code == 200 and again.json()["changed"] is False and again.json()["id"] == document.pk
    assert queued_reads() == []


@pytest.mark.django_db
def test_a_scan_sent_for_a_stored_url_keeps_the_old_text_until_read_and_if_it_fails(api, upload, database_queue):
    url = "https://example.com/notice"
    first = upload("notice.txt", b"The harbour notice about the wintering herons.\n", url=url)
    assert first.status_code == 201

    scan = upload("notice.png", corrupt_png(), url=url)

    assert scan.status_code == 202 and scan.json()["id"] == first.json()["id"]
    assert scan.json()["status"] == "processing" and scan.json()["title"] == first.json()["title"]
    assert [h["document_id"] for h in keyword_hits(api, "herons")] == [first.json()["id"]]
    assert document_read_task.call(first.json()["id"]) is None
    failed = api.get(f"/api/documents/{first.json()['id']}/").json()
    assert failed["status"] == "failed" and failed["error"].startswith("The image is corrupt")
    # Nothing stored before is lost: the text read last is still there, and found.
    assert failed["text"] == "The harbour notice about the wintering herons." and len(failed["chunks"]) == 1
    assert [h["document_id"] for h in keyword_hits(api, "herons")] == [first.json()["id"]]


@pytest.mark.django_db
def test_a_read_whose_original_went_missing_fails_saying_so(api, upload, database_queue):
    document_id = upload("gone.png", ff.render_text_image(["Gone"])).json()["id"]
    file_path(Document.objects.get(pk=document_id).file_sha256).unlink()

    assert document_read_task.call(document_id) is None

    failed = progress(api, document_id)
    assert failed["status"] == "failed" and "missing from the file store" in failed["error"], failed


@pytest.mark.django_db
def test_the_admin_reads_failed_scans_again_and_says_how_many(
    api, upload, database_queue, settings, django_user_model, run_commit_hooks
):
    """A read that failed for a passing reason (its worker killed too often) is put back in line
    from the admin's document list; an active document selected with it is skipped, and said so."""
    document_id = upload("retry.png", ff.render_text_image(["Retry me"])).json()["id"]
    settings.TASKS_MAX_ATTEMPTS = 1
    Document.objects.filter(pk=document_id).update(
        reading={**Document.objects.get(pk=document_id).reading, "attempts": 1}
    )
    assert document_read_task.call(document_id) is None
    assert Document.objects.get(pk=document_id).status == Document.Status.FAILED
    text_id = api.post("/api/documents/", {"title": "Plain", "text": "Plain text stays.", "source": "scans"}).json()[
        "id"
    ]
    DBTaskResult.objects.all().delete()

    staff = django_user_model.objects.create_superuser("staff", "staff@example.com", "pw")
    api.force_login(staff)
    listing = api.get("/admin/documents/document/")
    assert "failed" in listing.content.decode() and "stopped 1 times" in listing.content.decode()
    with run_commit_hooks():
        response = api.post(
            "/admin/documents/document/",
            {"action": "read_again", "_selected_action": [document_id, text_id]},
            follow=True,
        )

    messages = [str(m) for m in response.context["messages"]]
    assert messages == [
        "Queued 1 document to be read again; 1 document skipped (not a failed scan with its original kept)."
    ]
    again = progress(api, document_id)
    assert again["status"] == "processing" and not again["error"], again
    assert queued_reads() == [[document_id]]
    assert Document.objects.get(pk=text_id).status == Document.Status.ACTIVE


@pytest.mark.django_db
def test_a_scan_added_in_the_admin_is_read_by_the_worker_too(
    staff_client, database_queue, run_commit_hooks, settings, tmp_path
):
    from documents.models import Source

    settings.FILES_DIR = tmp_path / "files"
    source = Source.objects.create(name="scans")
    handle = io.BytesIO(ff.render_text_image(["Admin scan"]))
    handle.name = "admin-scan.png"
    with run_commit_hooks():
        response = staff_client.post(
            "/admin/documents/document/add/",
            {"source": source.pk, "file": handle, "title": "", "url": "", "metadata": "{}"},
            follow=True,
        )
    assert response.status_code == 200, response.content
    assert any("reads its scanned pages (OCR) in the background" in str(m) for m in response.context["messages"])
    document = Document.objects.get(file_name="admin-scan.png")
    assert document.status == Document.Status.PROCESSING and not document.chunks.exists()
    assert queued_reads() == [[document.pk]]
