"""Liveness (/health) and readiness (/ready) probes.

/health answers while the process runs. /ready checks each dependency that a request needs
and answers 503 with a JSON body naming every part that failed. Further checks (Qdrant, the
embedder) register themselves in READINESS_CHECKS from their own apps.

A check may also find a part that does not stop this instance answering requests but leaves
work undone: it raises ``Degraded``, and /ready still answers 200 with ``"status": "degraded"``
and the part named in ``"degraded"``. The task worker is such a part: without one, documents
stay pending (not embedded) while search, answers and uploads go on working. Failing readiness
for it would take every API instance out of a load balancer, turning an indexing stall into an
outage that restarting the API cannot fix; and Compose starts the worker only once the API is
healthy. A monitor alerts on the body's status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

# name -> callable that raises on failure and may return a dict of details
READINESS_CHECKS: dict[str, Callable[[], dict | None]] = {}
TASKS_COUNTED_MAX = 10_000


class Degraded(Exception):
    """A part that this instance can serve requests without, but that leaves work undone."""

    def __init__(self, status: str, details: dict):
        super().__init__(status)
        self.status = status
        self.details = details


def register_readiness_check(name: str, check: Callable[[], dict | None]) -> None:
    READINESS_CHECKS[name] = check


def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def check_worker() -> dict:
    """Whether a task worker is alive to run the queued tasks (embedding new chunks among them).

    "missing" when none is: degraded only while tasks wait for it, since with an empty queue
    nothing is held up yet (a worker that starts after the API, as under Compose, is no fault).
    """
    from django.conf import settings

    from ragsite.worker import tasks_unfinished, worker_needed, workers_alive

    if not worker_needed():
        return {"mode": "inline"}
    alive = workers_alive()
    details = {
        "alive": alive,
        "tasks_unfinished": tasks_unfinished(TASKS_COUNTED_MAX),
        "embedded": settings.EMBEDDED_WORKER,
    }
    if alive:
        return details
    details["hint"] = (
        "no task worker is running: unfinished tasks (new documents' embeddings among them) wait. "
        "Start one with `manage.py db_worker`, or set EMBEDDED_WORKER=true."
    )
    if details["tasks_unfinished"]:
        raise Degraded("missing", details)
    return {"status": "missing", **details}


register_readiness_check("database", check_database)
register_readiness_check("worker", check_worker)


@never_cache
@require_GET
def health(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request):
    checks: dict[str, dict] = {}
    failed: list[str] = []
    degraded: list[str] = []
    for name, check in READINESS_CHECKS.items():
        started = time.perf_counter()
        try:
            details = check() or {}
            checks[name] = {"status": "ok", **details}
        except Degraded as exc:
            logger.warning("readiness check %s: %s", name, exc.details.get("hint", exc.status))
            checks[name] = {**exc.details, "status": exc.status}
            degraded.append(name)
        except Exception as exc:  # a readiness probe reports every failure, whatever its type
            logger.warning("readiness check %s failed: %s", name, exc)
            checks[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
            failed.append(name)
        checks[name]["took_ms"] = round((time.perf_counter() - started) * 1000, 1)
    body = {"status": "unavailable" if failed else "degraded" if degraded else "ok", "checks": checks}
    if failed:
        body["failed"] = failed
    if degraded:
        body["degraded"] = degraded
    return JsonResponse(body, status=503 if failed else 200)
