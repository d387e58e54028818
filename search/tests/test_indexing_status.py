""" "Indexing is not running" made visible: with chunks pending and no task worker alive, the search
page shows a banner (the command to start one for staff, a plain sentence for others), the upload
progress endpoint says the document waits for the worker, and /ready reports the worker missing.
Once a worker runs, all three say so.

The fast tests hold a worker's liveness lock from a session of their own, as ragsite.worker does;
the slow one starts a real `manage.py db_worker` process, watches it index, then kills it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from documents.models import Chunk, Document, Source
from documents.services import document_ingest
from ragsite.tests.test_health import live_worker, queue_backend  # noqa: F401 - fixtures
from ragsite.worker import _LIVENESS_NAMESPACE

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
STAFF_BANNER = "Start the worker with <code>manage.py db_worker</code> or set <code>EMBEDDED_WORKER=true</code>."
PLAIN_BANNER = "New documents are not being indexed right now"


@pytest.fixture
def pending(db) -> Document:
    """A document whose chunks wait to be embedded (in a test transaction, no commit queues the sync)."""
    text = "\n\n".join(f"Paragraph {i}: the beekeeper checks each frame of the hive for brood." for i in range(40))
    document = document_ingest(source=Source.objects.create(name="hives"), title="Hive notes", text=text).document
    assert document.chunks.filter(index_status=Chunk.IndexStatus.PENDING).count() > 1
    return document


@pytest.fixture
def reader(client, django_user_model, settings):
    settings.SEARCH_PUBLIC = False
    client.force_login(django_user_model.objects.create_user("reader", password="pw"))
    return client


def banner(client) -> str:
    html = client.get("/").content.decode()
    if 'id="indexing-banner"' not in html:
        return ""
    return html.split('id="indexing-banner"', 1)[1].split("</div>", 1)[0]


def test_staff_see_the_banner_with_the_command_while_chunks_wait_and_no_worker_runs(
    staff_client,
    pending,
    queue_backend,  # noqa: F811
):
    n = Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING).count()
    text = banner(staff_client)
    assert f"Indexing is not running:</strong> {n} chunks are waiting." in text
    assert STAFF_BANNER in text


def test_other_users_see_a_plain_sentence(reader, pending, queue_backend):  # noqa: F811
    text = banner(reader)
    assert PLAIN_BANNER in text and "Please tell the administrator." in text
    assert "db_worker" not in text and "EMBEDDED_WORKER" not in text


def test_anonymous_visitors_of_a_public_search_see_no_banner(client, pending, queue_backend, settings):  # noqa: F811
    settings.SEARCH_PUBLIC = True
    assert client.get("/").status_code == 200
    assert banner(client) == ""


def test_the_banner_goes_once_a_worker_is_alive(staff_client, pending, queue_backend):  # noqa: F811
    assert STAFF_BANNER in banner(staff_client)
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as worker:
        worker.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [_LIVENESS_NAMESPACE, "host-c:9:live"])
        assert banner(staff_client) == ""
    # its process ended (its connection with it): the banner is back
    assert STAFF_BANNER in banner(staff_client)


def test_no_banner_without_pending_chunks_or_when_tasks_run_inline(staff_client, pending, settings, queue_backend):  # noqa: F811
    settings.TASKS_BACKEND = "immediate"  # no worker needed: tasks run in the request
    assert banner(staff_client) == ""
    settings.TASKS_BACKEND = "database"
    Chunk.objects.update(index_status=Chunk.IndexStatus.INDEXED)
    assert banner(staff_client) == ""


def test_the_progress_endpoint_says_the_document_waits_for_the_worker(staff_client, pending, queue_backend):  # noqa: F811
    url = f"/api/documents/{pending.pk}/progress"
    body = staff_client.get(url).json()
    assert body["pending"] > 0 and body["done"] is False and body["waiting_for_worker"] is True


def test_the_progress_endpoint_with_a_live_worker_is_just_indexing(staff_client, pending, queue_backend, live_worker):  # noqa: F811
    body = staff_client.get(f"/api/documents/{pending.pk}/progress").json()
    assert body["pending"] > 0 and body["waiting_for_worker"] is False


def test_a_done_document_never_waits_for_the_worker(staff_client, pending, queue_backend):  # noqa: F811
    pending.chunks.update(index_status=Chunk.IndexStatus.INDEXED)
    body = staff_client.get(f"/api/documents/{pending.pk}/progress").json()
    assert body["done"] is True and body["waiting_for_worker"] is False


# --- A real worker process ----------------------------------------------------------------


def wait_for(condition, what: str, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"gave up waiting for {what}")


def worker_env(tmp_path: Path, openai_server) -> dict[str, str]:
    db = connection.settings_dict
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
        "DJANGO_SETTINGS_MODULE": "ragsite.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "DATA_DIR": str(tmp_path),
        "EMBEDDING_BACKEND": "openai",
        "EMBEDDING_MODEL": "text-embedding-3-small",
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_API_KEY": "test-key",
        "TASKS_BACKEND": "database",
        "EMBEDDED_WORKER": "false",
        "LOG_LEVEL": "INFO",
    }


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_clears_the_banner_indexes_the_upload_and_its_death_shows(
    staff_client,
    queue_backend,  # noqa: F811
    openai_server,
    tmp_path,
):
    env = worker_env(tmp_path, openai_server)
    # Stored by another process with the database queue, as the API does: the chunks are pending
    # and their sync task waits in the queue.
    script = (
        "from documents.models import Source; from documents.services import document_ingest\n"
        "text = '\\n\\n'.join(f'Paragraph {i}: the beekeeper checks each frame for brood.' for i in range(40))\n"
        "print(document_ingest(source=Source.objects.create(name='hives'), title='Hive notes', text=text).document.pk)"
    )
    made = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    document_id = int(made.stdout.strip().splitlines()[-1])
    progress_url = f"/api/documents/{document_id}/progress"

    ready = staff_client.get("/ready").json()
    assert ready["status"] == "degraded" and ready["checks"]["worker"]["status"] == "missing", ready
    assert STAFF_BANNER in banner(staff_client)
    assert staff_client.get(progress_url).json()["waiting_for_worker"] is True

    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "db_worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(worker.stdout), daemon=True).start()
    try:
        worker_check = wait_for(
            lambda: (c := staff_client.get("/ready").json()["checks"]["worker"])["status"] == "ok" and c,
            "the worker to take its liveness lock",
        )
        assert worker_check["alive"] == 1
        assert banner(staff_client) == ""
        done = wait_for(
            lambda: (p := staff_client.get(progress_url).json())["done"] and p, "the worker to index the document"
        )
        assert done["indexed"] == done["chunks"] > 1 and done["waiting_for_worker"] is False, "".join(output)
    finally:
        worker.send_signal(signal.SIGKILL)  # dies as an out-of-memory kill would: no clean-up of its own
        worker.wait(30)

    gone = wait_for(
        lambda: (c := staff_client.get("/ready").json()["checks"]["worker"])["status"] == "missing" and c,
        "PostgreSQL to drop the dead worker's lock",
    )
    assert gone["alive"] == 0
