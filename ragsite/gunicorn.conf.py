"""Gunicorn settings for ragsite, read from the environment.

Used by the production image and by Compose, always as
``gunicorn -c ragsite/gunicorn.conf.py ragsite.wsgi``. Gunicorn treats every module-level name
that matches one of its settings as that setting, so helpers here start with an underscore.

    GUNICORN_BIND              address to listen on (default 0.0.0.0:$PORT, PORT default 8000)
    GUNICORN_WORKERS           processes (default 2 with a Qdrant server, 1 in embedded mode)
    GUNICORN_THREADS           threads per process (gthread worker; default 4)
    GUNICORN_TIMEOUT           seconds a request may take before its worker is killed (default 60)
    GUNICORN_GRACEFUL_TIMEOUT  seconds in-flight requests get after SIGTERM (default 30)
    GUNICORN_KEEPALIVE         seconds an idle keep-alive connection stays open (default 5)
    GUNICORN_MAX_REQUESTS      recycle a worker after this many requests, 0 = never (default 0)
    GUNICORN_RELOAD            restart workers when code changes, development only (default false)
    LOG_LEVEL, LOG_FORMAT      as in Django's settings: json in production, text otherwise
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

# Gunicorn puts its working directory on sys.path before reading this file, so the project's
# strict environment readers (a bad value names its variable) are importable here.
from ragsite.config import env_bool, env_choice, env_int, env_str

_PRODUCTION = env_choice("DJANGO_ENV", "development", ["development", "production", "test"]) == "production"
# Without QDRANT_URL the vector store is Qdrant local mode on disk, which only one process may
# open: a second gunicorn worker would fail on every vector request, so refuse to start instead.
_EMBEDDED = not env_str("QDRANT_URL")

# A container must listen beyond its own loopback; the published port decides who can reach it.
bind = [env_str("GUNICORN_BIND", f"0.0.0.0:{env_int('PORT', 8000, minimum=1, maximum=65535)}")]
workers = env_int("GUNICORN_WORKERS", 1 if _EMBEDDED else 2, minimum=1)
if _EMBEDDED and workers > 1:
    raise SystemExit(
        f"GUNICORN_WORKERS={workers} needs a Qdrant server: QDRANT_URL is not set, so the vector store is "
        "Qdrant local mode, which only one process can open. Set QDRANT_URL, or GUNICORN_WORKERS=1."
    )
# gthread: requests spend most of their time waiting on PostgreSQL and Qdrant, so a few threads
# per process serve them concurrently while each process holds one copy of the embedding model.
worker_class = "gthread"
threads = env_int("GUNICORN_THREADS", 4, minimum=1)
timeout = env_int("GUNICORN_TIMEOUT", 60, minimum=1)
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=0)
keepalive = env_int("GUNICORN_KEEPALIVE", 5, minimum=0)
max_requests = env_int("GUNICORN_MAX_REQUESTS", 0, minimum=0)
max_requests_jitter = max_requests // 10
# The search page sends its query in the URL (a GET form, so results can be linked and paged): a
# query of SEARCH_MAX_QUERY_CHARS non-Latin characters is up to 9 bytes each once percent-encoded,
# far past gunicorn's default 4094-byte request line (a bare "414 Request Line is too large").
# 8190 is the most gunicorn allows; the page keeps its own links within search.views.MAX_FORM_URL_CHARS
# below it, and app.js says so in the page for a query that would not fit.
limit_request_line = 8190
reload = env_bool("GUNICORN_RELOAD", False)
if reload and _PRODUCTION:
    raise SystemExit("GUNICORN_RELOAD=true is for development; it is not allowed with DJANGO_ENV=production.")
# The app loads in each worker after the fork, never in the master: the embedded task worker
# thread and torch's thread pools do not survive a fork.
preload_app = False
# Worker heartbeats go to a file; on a container's overlay filesystem that file can stall for
# seconds and get healthy workers killed, so use memory-backed /dev/shm where it exists.
if os.path.isdir("/dev/shm"):  # noqa: S108 - gunicorn's documented choice for containers
    worker_tmp_dir = "/dev/shm"  # noqa: S108
# gunicorn 25+ opens a control socket under $HOME by default; the image's home is read-only and
# two servers on one host would share the path, so it is off unless GUNICORN_CONTROL_SOCKET names one.
_CONTROL_SOCKET = env_str("GUNICORN_CONTROL_SOCKET")
control_socket_disable = not _CONTROL_SOCKET
if _CONTROL_SOCKET:
    control_socket = _CONTROL_SOCKET
# Behind a reverse proxy the client address comes from X-Forwarded-For; trust it only from the
# addresses in FORWARDED_ALLOW_IPS (gunicorn reads that variable itself; default 127.0.0.1).


def worker_int(worker):
    """The worker got SIGINT or SIGQUIT and is about to exit: ignore any further ones.

    Ctrl-C sends the worker both (the terminal's SIGINT, then the master's SIGQUIT); on a busy
    machine the second can arrive after the first exit has begun, and a second SystemExit
    raised then skips ``worker_exit``, leaving the embedded worker's task RUNNING.
    """
    import signal

    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)


def worker_exit(server, worker):
    """In the worker process, as it exits for any reason: stop the embedded task worker first.

    Its task is handed back to the queue at the next safe point. The wait stays inside the
    graceful timeout, after which the arbiter would kill this process with SIGKILL.
    """
    from ragsite.worker import embedded_worker_exit

    embedded_worker_exit(timeout=max(worker.cfg.graceful_timeout - 5, 1))


# --- Logging: everything to stdout, one line per event -----------------------------------------
_LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
_LOG_FORMAT = env_choice("LOG_FORMAT", "json" if _PRODUCTION else "text", ["json", "text"])
loglevel = _LOG_LEVEL.lower()
accesslog = "-"
errorlog = "-"
# X-Request-ID is set on every response by ragsite.logging.RequestIdMiddleware (the caller's own id
# when it sends a valid one), so an access line can be matched with the application's log lines.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s "%(a)s"'


class _AccessFields(logging.Filter):
    """Copy gunicorn's access-log atoms onto the record, so JSON lines carry them as fields."""

    _FIELDS: Mapping[str, str] = {
        "remote_addr": "h",
        "method": "m",
        "path": "U",
        "query": "q",
        "status": "s",
        "bytes": "B",
        "duration_ms": "M",
        "user_agent": "a",
        "request_id": "{x-request-id}o",
    }

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, Mapping):
            for field, atom in self._FIELDS.items():
                # Index, not .get(): gunicorn's SafeAtoms matches header atoms case-insensitively.
                try:
                    value = atoms[atom]
                except KeyError:
                    value = "-"
                setattr(record, field, value)
        return True


_FORMATTERS = {
    "text": {
        "error": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"},
        "access": {"format": "%(asctime)s INFO gunicorn.access %(message)s"},
    },
    "json": {
        "error": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "access": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
}[_LOG_FORMAT]

# Gunicorn's own loggers do not propagate: Django configures the root logger in each worker, and a
# propagating access logger would print every line twice.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": _LOG_LEVEL, "handlers": ["error"]},
    "loggers": {
        "gunicorn.error": {"level": _LOG_LEVEL, "handlers": ["error"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
    "filters": {"access_fields": {"()": _AccessFields}},
    "handlers": {
        "error": {"class": "logging.StreamHandler", "formatter": "error", "stream": sys.stdout},
        "access": {
            "class": "logging.StreamHandler",
            "formatter": "access",
            "filters": ["access_fields"],
            "stream": sys.stdout,
        },
    },
    "formatters": _FORMATTERS,
}
