"""Scans dropped on the upload section, in a real browser (Debian's Chromium through Playwright):
their rows say they wait for the worker to read them, then that OCR reads them, then the usual
indexing, or "failed: <reason>" for a file that cannot be read.

Tasks wait in the database queue; the test holds a worker's liveness lock (the worker is "alive")
and runs the queued reads itself, as the worker would.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from documents.models import Document
from documents.tasks import document_read_task
from documents.tests import format_fixtures as ff
from ragsite.worker import _LIVENESS_NAMESPACE
from search.tests.test_browser import DESKTOP, TIMEOUT_MS, browser, log_in  # noqa: F401 - browser: the fixture
from search.tests.test_browser_documents import site, watch_errors  # noqa: F401 - site: the fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def queued_tasks(settings):
    settings.TASKS_BACKEND = "database"
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def test_dropped_scans_show_the_worker_reading_them_then_indexing_or_why_they_failed(
    browser,  # noqa: F811
    site,  # noqa: F811
    queued_tasks,
    tmp_path,
):
    good = tmp_path / "lanterns.png"
    good.write_bytes(ff.render_text_image(["The quartermaster counted", "seventeen brass lanterns."]))
    broken = tmp_path / "broken.png"
    data = ff.render_text_image(["Broken scan"])
    broken.write_bytes(data[: len(data) // 2])  # its header is sound, its pixels cut off
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)
    log_in(page, site)
    page.locator("#upload summary").click()

    page.set_input_files("#upload-files", [str(good), str(broken)])
    items = page.locator("#upload-list .upload-item")
    rows = items.nth(0), items.nth(1)
    for row in rows:
        row.and_(page.locator("[data-state=waiting]")).wait_for()
        assert row.locator(".upload-status").inner_text() == "waiting for the worker to read the scan (not running)"
    assert rows[0].locator(".upload-name a").inner_text() == "lanterns.png"  # the provisional title

    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as worker:
        worker.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [_LIVENESS_NAMESPACE, "host-e:1:live"])
        for row in rows:
            row.and_(page.locator("[data-state=reading]")).wait_for()
            assert row.locator(".upload-status").inner_text().startswith("reading scanned pages (OCR)…")

        document_read_task.call(Document.objects.get(file_name="broken.png").pk)
        rows[1].and_(page.locator("[data-state=failed]")).wait_for()
        assert rows[1].locator(".upload-status").inner_text().startswith("failed: The image is corrupt or unreadable")

        document_read_task.call(Document.objects.get(file_name="lanterns.png").pk)  # OCR, as the worker would
        rows[0].and_(page.locator("[data-state=indexing]")).wait_for()
        # Read: its chunk waits for the (pretend) worker to embed it, as any upload's would.
        assert rows[0].locator(".upload-status").inner_text() == "indexing 0 / 1 chunks"

    assert Document.objects.get(file_name="lanterns.png").status == Document.Status.ACTIVE
    assert errors == []
    context.close()
