"""Liveness (/health) and readiness (/ready) probes.

/health answers while the process runs. /ready checks each dependency that a request needs
and answers 503 with a JSON body naming every part that failed. Further checks (Qdrant, the
embedder) register themselves in READINESS_CHECKS from their own apps.
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


def register_readiness_check(name: str, check: Callable[[], dict | None]) -> None:
    READINESS_CHECKS[name] = check


def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


register_readiness_check("database", check_database)


@never_cache
@require_GET
def health(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request):
    checks: dict[str, dict] = {}
    failed: list[str] = []
    for name, check in READINESS_CHECKS.items():
        started = time.perf_counter()
        try:
            details = check() or {}
            checks[name] = {"status": "ok", **details}
        except Exception as exc:  # a readiness probe reports every failure, whatever its type
            logger.warning("readiness check %s failed: %s", name, exc)
            checks[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
            failed.append(name)
        checks[name]["took_ms"] = round((time.perf_counter() - started) * 1000, 1)
    body = {"status": "ok" if not failed else "unavailable", "checks": checks}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)
