from __future__ import annotations

import json

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from ragsite.worker import _LIVENESS_NAMESPACE


def test_health_answers_ok(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_every_response_carries_a_request_id(client):
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response["X-Request-ID"] == "abc-123"
    assert len(client.get("/health")["X-Request-ID"]) == 32


def test_ready_answers_ok_when_the_database_is_up(db, client):
    response = client.get("/ready")
    body = response.json()
    assert body["checks"]["database"]["status"] == "ok", body
    assert response.status_code == 200, body


def test_ready_answers_503_naming_the_database_when_it_is_unreachable(manage, tmp_path):
    # A separate process whose DATABASE_URL points at a closed port: the real failure, not a mock.
    script = (
        "import json; from django.test import Client;"
        "r = Client().get('/ready'); print(r.status_code); print(r.content.decode())"
    )
    result = manage(
        "shell",
        "-c",
        script,
        env={
            "DATABASE_URL": "postgres://postgres@127.0.0.1:9/nothing",
            "DATA_DIR": str(tmp_path),
            "ALLOWED_HOSTS": "testserver",
        },
    )
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == "503", result.stdout + result.stderr
    body = json.loads(lines[-1])
    assert "database" in body["failed"]
    assert body["checks"]["database"]["status"] == "error"


def test_the_api_docs_page_loads_its_assets_from_this_server(db, client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "drf_spectacular_sidecar" in page and "cdn." not in page.lower()


# --- The task worker: reported by /ready, without failing it ---------------------------------


@pytest.fixture
def queue_backend(settings):
    """Tasks go to the database queue, as in production (the test settings run them inline)."""
    settings.TASKS_BACKEND = "database"


@pytest.fixture
def live_worker():
    """A worker elsewhere: a session of its own holding a liveness lock, as ragsite.worker's does."""
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as session:
        session.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [_LIVENESS_NAMESPACE, "host-b:42:live"])
        yield


def _queued_task(status: str = "READY") -> DBTaskResult:
    return DBTaskResult.objects.create(
        args_kwargs={"args": [], "kwargs": {}},
        task_path="search.tasks.keyword_stats_refresh_task",
        backend_name="default",
        status=status,
        run_after=timezone.now(),
    )


def test_ready_reports_a_missing_worker_and_stays_ok_while_nothing_waits(db, client, queue_backend):
    response = client.get("/ready")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok", body
    worker = body["checks"]["worker"]
    assert worker["status"] == "missing" and worker["alive"] == 0 and worker["tasks_unfinished"] == 0
    assert "manage.py db_worker" in worker["hint"] and "EMBEDDED_WORKER=true" in worker["hint"]


@pytest.mark.parametrize("status", ["READY", "RUNNING"])  # RUNNING: left by a worker that died
def test_ready_is_degraded_not_failed_while_tasks_wait_for_a_missing_worker(db, client, queue_backend, status):
    _queued_task(status)
    response = client.get("/ready")
    body = response.json()
    assert response.status_code == 200, body  # search and uploads still work: no reason to leave a load balancer
    assert body["status"] == "degraded" and body["degraded"] == ["worker"] and "failed" not in body
    assert body["checks"]["worker"]["status"] == "missing" and body["checks"]["worker"]["tasks_unfinished"] == 1


def test_ready_reports_a_live_worker(db, client, queue_backend, live_worker):
    _queued_task()
    body = client.get("/ready").json()
    assert body["status"] == "ok" and "degraded" not in body, body
    assert body["checks"]["worker"] == {
        "status": "ok",
        "alive": 1,
        "tasks_unfinished": 1,
        "embedded": body["checks"]["worker"]["embedded"],
        "took_ms": body["checks"]["worker"]["took_ms"],
    }


def test_a_lock_of_another_namespace_or_database_is_no_worker(db, client, queue_backend):
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as session:
        session.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [_LIVENESS_NAMESPACE + 1, "not-a-worker"])
        session.execute("SELECT pg_advisory_lock(%s)", [_LIVENESS_NAMESPACE])
        with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as elsewhere:
            # a worker of another database on the same server (another deployment, another test run)
            elsewhere.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [_LIVENESS_NAMESPACE, "elsewhere"])
            assert client.get("/ready").json()["checks"]["worker"]["alive"] == 0


def test_with_tasks_run_inline_no_worker_is_needed(db, client, settings):
    settings.TASKS_BACKEND = "immediate"
    body = client.get("/ready").json()
    assert body["status"] == "ok" and body["checks"]["worker"]["status"] == "ok"
    assert body["checks"]["worker"]["mode"] == "inline"
