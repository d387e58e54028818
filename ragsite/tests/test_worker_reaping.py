"""Tasks left RUNNING by a worker that died are re-queued when a worker starts; a live worker's
task is never taken, on this host or another (its liveness is a PostgreSQL advisory lock held by
its own connection, which PostgreSQL drops when the process dies)."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection
from django_tasks_db.models import DBTaskResult

from ragsite.worker import _LIVENESS_NAMESPACE, tasks_reap


def _running_task(*worker_ids: str) -> DBTaskResult:
    return DBTaskResult.objects.create(
        args_kwargs={"args": [], "kwargs": {}},
        task_path="search.tasks.keyword_stats_refresh_task",
        backend_name="default",
        status="RUNNING",
        worker_ids=list(worker_ids),
    )


@pytest.fixture
def live_worker():
    """A worker process elsewhere: a session of its own holding the liveness lock of its id."""
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as session:
        session.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [_LIVENESS_NAMESPACE, "host-b:42:live"])
        yield "host-b:42:live"


@pytest.mark.django_db
def test_task_of_a_dead_worker_is_requeued_and_a_live_workers_task_is_left_alone(live_worker):
    dead = _running_task("host-a:7:gone")
    alive = _running_task("host-a:7:gone", live_worker)  # re-run once already, now by a live worker

    result = tasks_reap()

    assert result == {"requeued": [str(dead.pk)], "failed": []}
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == "READY"
    assert alive.status == "RUNNING"


@pytest.mark.django_db
def test_task_whose_worker_died_too_often_is_marked_failed_not_rerun(settings):
    settings.TASKS_MAX_ATTEMPTS = 3
    task = _running_task("a:1:x", "a:2:y", "a:3:z")

    assert tasks_reap() == {"requeued": [], "failed": [str(task.pk)]}
    task.refresh_from_db()
    assert task.status == "FAILED"
    assert task.exception_class_path == "ragsite.worker.WorkerLost"
    assert "died 3 times" in task.traceback


@pytest.mark.django_db
def test_reaping_with_nothing_left_running_changes_nothing():
    finished = _running_task("a:1:x")
    DBTaskResult.objects.filter(pk=finished.pk).update(status="SUCCESSFUL")
    assert tasks_reap() == {"requeued": [], "failed": []}
