"""Prometheus metrics at ``/metrics`` (off unless METRICS_ENABLED; METRICS_TOKEN guards it).

Two kinds of numbers:

- **Counted in the process** that does the work: request latency by route name and method,
  search latency by mode, texts embedded. Under gunicorn with several workers set
  ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, emptied at each start): every worker then
  writes its samples there and a scrape of any worker sums them all (prometheus_client's
  multiprocess mode). Without it each worker reports only its own requests.
- **Read from PostgreSQL at scrape time**: chunks by index status, documents by status, task
  rows by queue and status (queue depth = ``READY``), crawl pages by outcome, stored
  embeddings. A few aggregate queries per scrape; true whichever process (web, ``db_worker``)
  did the work. The apps register the gauges over their own tables (``register_database_gauges``).

Labels are bounded: a route is the URL pattern's name (never the raw path), a method outside
the standard ones is ``other``, a mode is one of the search modes.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

logger = logging.getLogger(__name__)

MODES = ("keyword", "semantic", "hybrid")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Up to a minute: answers (/api/ask/) wait for a language model.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUEST_LATENCY = Histogram(
    "ragsite_http_request_duration_seconds",
    "Time to answer an HTTP request, by URL route name, method and status code.",
    ["route", "method", "status"],
    buckets=BUCKETS,
)
SEARCH_LATENCY = Histogram(
    "ragsite_search_duration_seconds",
    "Time to answer a search or an answer request, by route and search mode.",
    ["route", "mode"],
    buckets=BUCKETS,
)
TEXTS_EMBEDDED = Counter(
    "ragsite_chunks_embedded",
    "Chunk texts run through the embedding model in this process (cache hits not counted).",
)


def chunks_embedded(count: int) -> None:
    """Called by the vector sync after the embedder answered for ``count`` new texts."""
    TEXTS_EMBEDDED.inc(count)


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return match.view_name or match.route or "unnamed"
    if request.path.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    return "unmatched"


def _search_mode(route: str, request: HttpRequest, response) -> str | None:
    data = getattr(response, "data", None)  # DRF responses keep the data they rendered
    if isinstance(data, dict) and data.get("mode") in MODES:
        return data["mode"]
    if route == "home" and request.GET.get("q", "").strip() and response.status_code == 200:
        mode = request.GET.get("mode")
        return mode if mode in MODES else settings.SEARCH_DEFAULT_MODE
    return None


class RequestMetricsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if not settings.METRICS_ENABLED:
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        try:
            route = _route(request)
            method = request.method if request.method in METHODS else "other"
            REQUEST_LATENCY.labels(route, method, str(response.status_code)).observe(elapsed)
            mode = _search_mode(route, request, response)
            if mode is not None:
                SEARCH_LATENCY.labels(route, mode).observe(elapsed)
        except Exception:  # metrics must never turn an answer into an error
            logger.exception("recording request metrics failed")
        return response


def query_rows(sql: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def status_gauge(name: str, doc: str, model, column: str, choices) -> GaugeMetricFamily:
    """Rows of ``model`` by the value of ``column``; a value with no rows is 0, not missing."""
    family = GaugeMetricFamily(name, doc, labels=["status"])
    counts = dict.fromkeys(choices, 0)
    table = connection.ops.quote_name(model._meta.db_table)
    for value, count in query_rows(f"SELECT {column}, count(*) FROM {table} GROUP BY {column}"):
        counts[value] = count
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


# Gauges over the apps' own tables: each app registers a function yielding metric families in
# its AppConfig.ready(), since ragsite sits below the apps and does not import their models.
_database_gauges: list[Callable[[], Iterable[Metric]]] = []


def register_database_gauges(gauges: Callable[[], Iterable[Metric]]) -> None:
    if gauges not in _database_gauges:
        _database_gauges.append(gauges)


class DatabaseCollector:
    """Gauges read from PostgreSQL at scrape time, so every process's work is in them."""

    def collect(self):
        up = GaugeMetricFamily("ragsite_database_up", "1 if the scrape could read the counts from PostgreSQL.")
        try:
            families = list(self._families())
        except DatabaseError:
            # the process's own metrics are still worth a scrape; the outage shows here
            logger.warning("metrics: counts from PostgreSQL unavailable", exc_info=True)
            families = []
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families

    def _families(self):
        from django_tasks_db.models import DBTaskResult

        for gauges in _database_gauges:
            yield from gauges()

        tasks = GaugeMetricFamily(
            "ragsite_tasks",
            "Background task rows by queue and status: READY is the queue depth, FAILED the failures "
            "kept (until pruned).",
            labels=["queue", "status"],
        )
        table = connection.ops.quote_name(DBTaskResult._meta.db_table)
        counts = {("default", s): 0 for s in ("READY", "RUNNING", "SUCCESSFUL", "FAILED")}
        for queue, status, count in query_rows(
            f"SELECT queue_name, status, count(*) FROM {table} GROUP BY queue_name, status"
        ):
            counts[(queue, status)] = count
        for (queue, status), count in sorted(counts.items()):
            tasks.add_metric([queue, status], count)
        yield tasks

        oldest = GaugeMetricFamily(
            "ragsite_task_oldest_ready_age_seconds",
            "Age of the oldest task waiting to run (0 when none): a stuck or missing worker shows here.",
        )
        (age,) = query_rows(
            # clock_timestamp: now() is the transaction's start; greatest: app and database clocks differ
            f"SELECT greatest(coalesce(extract(epoch FROM clock_timestamp() - min(enqueued_at)), 0), 0) "
            f"FROM {table} WHERE status = 'READY'"
        )[0]
        oldest.add_metric([], float(age))
        yield oldest


class _ProcessCollector:
    """This process's own metrics (the default registry), when not in multiprocess mode."""

    def collect(self):
        return REGISTRY.collect()


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if settings.PROMETHEUS_MULTIPROC_DIR:
        MultiProcessCollector(registry)
    else:
        registry.register(_ProcessCollector())
    registry.register(DatabaseCollector())
    return registry


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_ENABLED:
        raise Http404("Metrics are off (METRICS_ENABLED=false).")
    if settings.METRICS_TOKEN:
        # a wrong token counts against the address like a wrong API key: the same guessing
        from rest_framework.exceptions import Throttled

        from ragsite.security import BadKeyThrottle

        guard = BadKeyThrottle()
        try:
            guard.check(request)
        except Throttled as exc:
            response = HttpResponse(f"{exc.detail}\n", status=429, content_type="text/plain")
            response["Retry-After"] = str(int(exc.wait or 1))
            return response
        if not _authorized(request):
            guard.record_failure(request)
            response = HttpResponse("A valid metrics token is required.\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
