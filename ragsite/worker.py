"""The task worker: `manage.py db_worker` in its own process, or a thread of the web process.

In embedded mode (Qdrant's local store, which only one process may open) the web process
must also run the tasks, so `ragsite.wsgi` starts the worker as a daemon thread. Apps hook
start-up work (re-queue pending vector syncs, resume crawls left by a dead worker) on the
``worker_started`` signal.

Stopping and dying:

- A worker asked to stop (SIGINT/SIGTERM to `db_worker`, gunicorn stopping its worker) lets
  the running task reach a safe point: long tasks call ``raise_if_stopping()`` between
  batches, and the worker then puts the task back in the queue (status READY) instead of
  recording a failure. The next worker to start runs it again; tasks are idempotent.
- A worker that dies (kill -9, out of memory, a power cut) leaves its task RUNNING. Every
  worker holds a PostgreSQL advisory lock named after its id for as long as its process lives,
  and PostgreSQL drops that lock with the dead process's connection; so at start a worker
  re-queues every RUNNING task whose worker's lock is free (``tasks_reap``). A task of a live
  worker, on this host or another, is never taken. A task whose worker died
  ``TASKS_MAX_ATTEMPTS`` times (it may be what kills it) is marked failed instead.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import threading

from django.dispatch import Signal

logger = logging.getLogger(__name__)

worker_started = Signal()
# Periodic jobs of the process that runs the tasks (the vector healer): each receiver starts its
# own daemon thread and ends it when ``worker_stopping`` is set.
worker_periodic = Signal()
worker_stopping = threading.Event()

# Advisory lock namespace of the workers' liveness locks (the first key of the two-key form).
_LIVENESS_NAMESPACE = 0x7277

_lock = threading.Lock()
_thread: threading.Thread | None = None
_worker = None


class WorkerStopping(Exception):
    """The worker is stopping: the task stops at a safe point and goes back to the queue."""


class WorkerLost(Exception):
    """Recorded on a task whose worker died ``TASKS_MAX_ATTEMPTS`` times while running it."""


def stop_requested() -> bool:
    return worker_stopping.is_set()


def raise_if_stopping() -> None:
    """Call between units of work in a long task; nothing after the last call may be lost."""
    if worker_stopping.is_set():
        raise WorkerStopping("the task worker is stopping; the task goes back to the queue")


def worker_id() -> str:
    # Unique per worker, not just host:pid: a restarted container has the same host name and
    # often the same PID, and a dead worker's tasks must not pass for a live one's.
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def send_worker_started() -> None:
    for receiver, response in worker_started.send_robust(sender=None):
        if isinstance(response, Exception):
            logger.error("worker start-up hook %s failed: %s", receiver, response)


def start_worker_periodic() -> None:
    for receiver, response in worker_periodic.send_robust(sender=None, stopping=worker_stopping):
        if isinstance(response, Exception):
            logger.error("worker periodic job %s failed to start: %s", receiver, response)


def tasks_reap() -> dict[str, list[str]]:
    """Re-queue the tasks left RUNNING by workers that are gone; ``{"requeued": ids, "failed": ids}``.

    A worker is gone when nobody holds its liveness lock. The check takes that lock for the
    length of this transaction only, so a worker starting with the same id (impossible: ids
    are random) or a second reaper running now would wait or skip, never double-handle a row.
    """
    from django.conf import settings
    from django.db import connection, transaction
    from django_tasks_db.models import DBTaskResult

    table = DBTaskResult._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH running AS MATERIALIZED (
                SELECT id, worker_ids FROM {table} WHERE status = 'RUNNING' FOR UPDATE SKIP LOCKED
            ), lost AS (
                SELECT id, jsonb_array_length(worker_ids) >= %(max_attempts)s AS give_up FROM running
                WHERE pg_try_advisory_xact_lock(%(namespace)s, hashtext(coalesce(worker_ids ->> -1, '')))
            )
            UPDATE {table} t SET
                status = CASE WHEN lost.give_up THEN 'FAILED' ELSE 'READY' END,
                finished_at = CASE WHEN lost.give_up THEN now() END,
                exception_class_path = CASE WHEN lost.give_up THEN 'ragsite.worker.WorkerLost' ELSE '' END,
                traceback = CASE WHEN lost.give_up THEN %(give_up_message)s ELSE '' END
            FROM lost WHERE t.id = lost.id
            RETURNING t.id::text, lost.give_up
            """,
            {
                "namespace": _LIVENESS_NAMESPACE,
                "max_attempts": settings.TASKS_MAX_ATTEMPTS,
                "give_up_message": (
                    f"The worker running this task died {settings.TASKS_MAX_ATTEMPTS} times (killed, out of "
                    "memory, or the machine stopped); it is not run again automatically."
                ),
            },
        )
        rows = cursor.fetchall()
    result = {
        "requeued": [pk for pk, give_up in rows if not give_up],
        "failed": [pk for pk, give_up in rows if give_up],
    }
    if result["requeued"]:
        logger.warning("re-queued %d task(s) left running by a worker that died", len(result["requeued"]))
    if result["failed"]:
        logger.error(
            "%d task(s) failed: their worker died %d times", len(result["failed"]), settings.TASKS_MAX_ATTEMPTS
        )
    return result


def workers_alive() -> int:
    """How many task workers are alive now, on any host: the liveness locks held in this database.

    Each worker holds its lock for as long as its process lives, and PostgreSQL drops it with the
    connection when the process dies, so a killed worker stops counting at once and no heartbeat
    is needed. pg_locks is read from shared memory and never waits on a lock, so this stays quick
    whatever the workers are doing. (A starting worker's ``tasks_reap`` briefly holds the lock of
    a dead worker's id too: it can only add to the count while a worker is in fact alive.)
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = %s::oid
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """,
            [_LIVENESS_NAMESPACE],
        )
        return cursor.fetchone()[0]


def worker_needed() -> bool:
    """Whether tasks wait in the database queue for a worker (TASKS_BACKEND=immediate runs them inline)."""
    from django.conf import settings

    return settings.TASKS_BACKEND == "database"


def worker_missing() -> bool:
    """True when queued tasks have no worker to run them: none is alive (not started, or died)."""
    return worker_needed() and workers_alive() == 0


def tasks_unfinished(cap: int) -> int:
    """Tasks due to run or running, counted up to ``cap`` (a bounded read).

    With no worker alive, the running ones are those a dead worker left: they wait as well.
    """
    from django.db.models import Q
    from django_tasks_db.models import DBTaskResult

    due = DBTaskResult.objects.ready().values("pk")
    return DBTaskResult.objects.filter(Q(pk__in=due) | Q(status="RUNNING"))[:cap].count()


def _worker_class():
    from django_tasks_db.management.commands.db_worker import Worker as BaseWorker

    class Worker(BaseWorker):
        """django-tasks-db's worker, plus: a liveness lock, reaping at start, hand-back on stop."""

        _liveness = None

        def run(self) -> None:
            worker_stopping.clear()
            self._liveness_take()
            try:
                tasks_reap()
                send_worker_started()
                start_worker_periodic()
                super().run()
            finally:
                self._liveness_release()

        def shutdown(self, signum, frame) -> None:
            if not self.running:
                logger.warning("Received %s again - stopping now.", signal.strsignal(signum))
                self.reset_signals()
                sys.exit(1)  # a running task goes back to the queue (run_task)
            # No exit from here (the library's handler exits at once when idle, which can be
            # between claiming a task and running it): the loop ends after its current step.
            logger.warning(
                "Received %s - stopping after the current step of the running task.", signal.strsignal(signum)
            )
            self.running = False
            worker_stopping.set()

        def run_task(self, db_task_result) -> None:
            record_failure = db_task_result.set_failed

            def set_failed_or_hand_back(exc: BaseException) -> None:
                if isinstance(exc, WorkerStopping) or (
                    worker_stopping.is_set() and isinstance(exc, (SystemExit, KeyboardInterrupt))
                ):
                    _hand_back(db_task_result)
                else:
                    record_failure(exc)

            db_task_result.set_failed = set_failed_or_hand_back
            super().run_task(db_task_result)

        def _liveness_take(self) -> None:
            import psycopg
            from django.db import connection

            # A connection of its own, outside Django's (which closes and pools connections):
            # the lock must live exactly as long as this worker.
            self._liveness = psycopg.connect(**connection.get_connection_params(), autocommit=True)
            self._liveness.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [_LIVENESS_NAMESPACE, self.worker_id])

        def _liveness_release(self) -> None:
            if self._liveness is not None:
                self._liveness.close()
                self._liveness = None

    return Worker


def _hand_back(db_task_result) -> None:
    """Put an interrupted task back in the queue, as if this worker had never claimed it."""
    from django_tasks_db.models import DBTaskResult

    worker_ids = list(db_task_result.worker_ids)[:-1]
    DBTaskResult.objects.filter(pk=db_task_result.pk, status="RUNNING").update(
        status="READY", started_at=None, worker_ids=worker_ids
    )
    db_task_result.status = "READY"
    db_task_result.worker_ids = worker_ids
    logger.info("task %s goes back to the queue: the worker is stopping", db_task_result.pk)


def worker_create(**options):
    """A task worker (the options of django-tasks-db's ``Worker``; ``worker_id`` defaults to a fresh one)."""
    options.setdefault("worker_id", worker_id())
    return _worker_class()(**options)


def start_embedded_worker(*, interval: float = 0.5) -> bool:
    """Start the in-process task worker once per process. Returns True if started now."""
    global _thread, _worker
    from django.conf import settings

    if settings.TASKS_BACKEND != "database":
        return False
    with _lock:
        if _thread is not None and _thread.is_alive():
            return False
        _worker = worker_create(
            queue_names=["*"],
            interval=interval,
            batch=False,
            backend_name="default",
            startup_delay=False,
            max_tasks=None,
            excluded_queue_names=[],
        )
        _thread = threading.Thread(target=_worker.run, name="ragsite-embedded-worker", daemon=True)
        _thread.start()
        logger.info("embedded task worker started in process %s", os.getpid())
        return True


def stop_embedded_worker(timeout: float = 10.0) -> bool:
    """Stop the in-process worker: its task stops at the next safe point and is handed back.

    Returns False if the thread is still running after ``timeout`` seconds.
    """
    global _thread
    worker_stopping.set()
    if _worker is not None:
        _worker.running = False
    if _thread is None:
        return True
    _thread.join(timeout)
    if _thread.is_alive():
        return False
    _thread = None
    return True


def embedded_worker_exit(timeout: float) -> None:
    """Before a process that runs the embedded worker exits: stop it, and never exit under it.

    Called by gunicorn's ``worker_exit`` hook. If the task has not reached a safe point in time
    (one embedding batch is native code that cannot be interrupted), its task is handed back
    from here and the process ends at once: finalizing the interpreter while ONNX Runtime's
    threads are in use aborts the process ("terminate called without an active exception").
    """
    if _worker is None:
        return
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C signals gunicorn's worker twice (the terminal's SIGINT, then the master's
        # SIGQUIT): a second SystemExit raised in the middle of this wait would end it early.
        for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    if stop_embedded_worker(timeout):
        return
    from django.db import close_old_connections
    from django_tasks_db.models import DBTaskResult

    close_old_connections()
    worker = _worker.worker_id
    handed_back = 0
    for task in DBTaskResult.objects.filter(status="RUNNING", worker_ids__contains=[worker]):
        if task.worker_ids and task.worker_ids[-1] == worker:
            _hand_back(task)
            handed_back += 1
    logger.warning(
        "the embedded task worker did not stop within %.0f s; %d task(s) handed back, exiting now", timeout, handed_back
    )
    logging.shutdown()
    os._exit(0)
