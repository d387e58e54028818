"""`manage.py serve`: run the service under gunicorn (used by `make run`).

In embedded mode (no QDRANT_URL) one process must own the local vector store, so gunicorn
runs one worker process with threads, and that process also runs the task worker.

Gunicorn runs as a child of this command, not in its place: this process started the
embedded PostgreSQL server (when DATABASE_URL is unset) and holds its lease
(ragsite.embedded), so it must outlive gunicorn to stop what it started. SIGINT, SIGTERM and
SIGHUP stop gunicorn (its worker puts an unfinished task back in the queue, see
ragsite/gunicorn.conf.py), then this command exits 0 and the embedded server stops with it.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections


class Command(BaseCommand):
    help = "Serve ragsite over HTTP with gunicorn (embedded mode: one process owns Qdrant and runs tasks)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=None, help="default: PORT (8000)")
        parser.add_argument("--threads", type=int, default=8)

    def handle(self, *args, host: str, port: int | None, threads: int, **options):
        port = port or settings.PORT
        if not settings.QDRANT_URL:
            self._data_dir_claim()
        config = Path(settings.BASE_DIR) / "ragsite" / "gunicorn.conf.py"
        env = dict(os.environ)
        env["GUNICORN_BIND"] = f"{host}:{port}"
        if not env.get("GUNICORN_THREADS"):  # unset or empty (`.env.example` lists it empty): --threads
            env["GUNICORN_THREADS"] = str(threads)
        if not settings.QDRANT_URL:
            env["GUNICORN_WORKERS"] = "1"
        argv = [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}"]
        if config.is_file():
            argv += ["-c", str(config)]
        else:
            argv += [
                "--workers",
                env.get("GUNICORN_WORKERS", "1"),
                "--threads",
                env["GUNICORN_THREADS"],
                "--worker-class",
                "gthread",
            ]
        argv.append("ragsite.wsgi:application")
        self.stdout.write(f"ragsite at http://{host}:{port}/  (admin: /admin/, API docs: /api/docs/)")
        if not settings.QDRANT_URL:
            kept = "the vector store and uploaded files" + (
                "" if settings.DATABASE_URL else ", the embedded PostgreSQL"
            )
            self.stdout.write(f"data in {settings.DATA_DIR} ({kept}); Ctrl-C stops everything")
        self.stdout.flush()
        connections.close_all()  # nothing of ours stays open while gunicorn runs

        stop_requested = []
        child = subprocess.Popen(argv, env=env)

        def stop(signum, frame):
            stop_requested.append(signum)
            if child.poll() is None:
                # Ctrl-C reaches gunicorn too (same process group); a signal sent to this process
                # alone (kill, systemd, a terminal closing) must reach it as well. SIGTERM asks
                # for a graceful stop; a repeated Ctrl-C stays a quick one.
                child.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, stop)
        returncode = child.wait()
        if returncode != 0 and not (stop_requested and returncode in (-signal.SIGINT, -signal.SIGTERM)):
            raise CommandError(f"gunicorn exited with status {returncode}", returncode=min(abs(returncode), 255) or 1)

    def _data_dir_claim(self) -> None:
        """One `serve` per data folder in embedded mode, refused up front with a message.

        The embedded vector store opens in one process only: a second `serve` on the same
        DATA_DIR used to start anyway, log a traceback and answer every semantic search with 503.
        The lock is the kernel's (flock), so it goes with the process that holds it, however it ends.
        """
        path = Path(settings.DATA_DIR) / "serve.lock"
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CommandError(
                f"ragsite is already running on the data folder {settings.DATA_DIR} (pid {holder}): the "
                "embedded vector store can be opened by one server only. Stop that one (Ctrl-C), or give "
                "this one a data folder of its own with DATA_DIR=..."
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._data_dir_lock = handle
