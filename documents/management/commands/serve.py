"""`manage.py serve`: run the service under gunicorn (used by `make run`).

In embedded mode (no QDRANT_URL) one process must own the local vector store, so gunicorn
runs one worker process with threads, and that process also runs the task worker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve ragsite over HTTP with gunicorn (embedded mode: one process owns Qdrant and runs tasks)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--threads", type=int, default=8)

    def handle(self, *args, host: str, port: int, threads: int, **options):
        config = Path(settings.BASE_DIR) / "ragsite" / "gunicorn.conf.py"
        env = dict(os.environ)
        env["GUNICORN_BIND"] = f"{host}:{port}"
        env.setdefault("GUNICORN_THREADS", str(threads))
        if not settings.QDRANT_URL:
            env["GUNICORN_WORKERS"] = "1"
        argv = [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}"]
        if config.is_file():
            argv += ["-c", str(config)]
        else:
            argv += ["--workers", env.get("GUNICORN_WORKERS", "1"), "--threads", env["GUNICORN_THREADS"], "--worker-class", "gthread"]
        argv.append("ragsite.wsgi:application")
        self.stdout.write(f"ragsite at http://{host}:{port}/  (admin: /admin/, API docs: /api/docs/)")
        self.stdout.flush()
        os.execvpe(argv[0], argv, env)  # noqa: S606 - replace this process with gunicorn, no shell
