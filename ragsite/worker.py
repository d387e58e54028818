"""The task worker: `manage.py db_worker` in its own process, or a thread of the web process.

In embedded mode (Qdrant's local store, which only one process may open) the web process
must also run the tasks, so `ragsite.wsgi` starts the worker as a daemon thread. Apps hook
start-up work (re-queue pending vector syncs, resume crawls left by a dead worker) on the
``worker_started`` signal.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from django.dispatch import Signal

logger = logging.getLogger(__name__)

worker_started = Signal()
# Periodic jobs of the process that runs the tasks (the vector healer): each receiver starts its
# own daemon thread and ends it when ``worker_stopping`` is set.
worker_periodic = Signal()
worker_stopping = threading.Event()

_lock = threading.Lock()
_thread: threading.Thread | None = None
_worker = None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def send_worker_started() -> None:
    for receiver, response in worker_started.send_robust(sender=None):
        if isinstance(response, Exception):
            logger.error("worker start-up hook %s failed: %s", receiver, response)


def start_worker_periodic() -> None:
    for receiver, response in worker_periodic.send_robust(sender=None, stopping=worker_stopping):
        if isinstance(response, Exception):
            logger.error("worker periodic job %s failed to start: %s", receiver, response)


def start_embedded_worker(*, interval: float = 0.5) -> bool:
    """Start the in-process task worker once per process. Returns True if started now."""
    global _thread, _worker
    from django.conf import settings

    if settings.TASKS_BACKEND != "database":
        return False
    with _lock:
        if _thread is not None and _thread.is_alive():
            return False
        from django_tasks_db.management.commands.db_worker import Worker

        _worker = Worker(
            queue_names=["*"],
            interval=interval,
            batch=False,
            backend_name="default",
            startup_delay=False,
            max_tasks=None,
            worker_id=worker_id(),
            excluded_queue_names=[],
        )

        def run() -> None:
            send_worker_started()
            start_worker_periodic()
            _worker.run()

        _thread = threading.Thread(target=run, name="ragsite-embedded-worker", daemon=True)
        _thread.start()
        logger.info("embedded task worker started in process %s", os.getpid())
        return True


def stop_embedded_worker(timeout: float = 10.0) -> None:
    global _thread
    worker_stopping.set()
    if _worker is not None:
        _worker.running = False
    if _thread is not None:
        _thread.join(timeout)
        _thread = None
