"""An upload with no task worker running, in a real browser (Debian's Chromium through Playwright):
the file's row says it waits for the indexing worker instead of sitting at "indexing 0 / N", and
the search page shows the banner; once a worker is alive, the banner is gone."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from documents.models import Chunk
from ragsite.worker import _LIVENESS_NAMESPACE
from search.tests.test_browser import TIMEOUT_MS, browser  # noqa: F401 - browser: the fixture
from search.tests.test_browser_sign_in import site  # noqa: F401 - site: the fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def queued_tasks(settings):
    """Tasks go to the database queue (the test settings run them inline), and no worker runs them."""
    settings.TASKS_BACKEND = "database"
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def test_an_upload_without_a_worker_says_it_waits_for_it(browser, site, queued_tasks, tmp_path, settings):  # noqa: F811
    settings.FILES_DIR = tmp_path / "files"
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(site + "/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw")
    page.click("#sign-in-button")
    page.locator("#q").wait_for()
    assert page.locator("#indexing-banner").count() == 0  # nothing pending yet

    notes = tmp_path / "bees.txt"
    notes.write_text("Bees keep the hive at 35 degrees by fanning their wings and clustering together.")
    page.click("#upload summary")
    page.set_input_files("#upload-files", [str(notes)])
    row = page.locator("#upload-list .upload-item").first
    row.and_(page.locator("[data-state=waiting]")).wait_for()
    assert row.locator(".upload-status").inner_text().startswith("waiting for the indexing worker (not running)")
    assert Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING).exists()

    page.reload()
    assert "Indexing is not running:" in page.locator("#indexing-banner").inner_text()
    assert "manage.py db_worker" in page.locator("#indexing-banner").inner_text()
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as worker:
        worker.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [_LIVENESS_NAMESPACE, "host-d:1:live"])
        page.reload()
        page.locator("#q").wait_for()
        assert page.locator("#indexing-banner").count() == 0
    page.close()
