"""Property-based fuzzing of the whole REST API from its own OpenAPI schema (schemathesis).

The schema comes from the running app (`/api/schema/`), so every operation it documents is
fuzzed, including ones added later. Requests go in-process to Django's WSGI application with a
write-scoped API key, against real PostgreSQL and Qdrant local mode. Bounded: a fixed number of
examples per operation and a fixed seed, so a run takes the same cases every time.

Checks: no 5xx, every status code is documented for its operation, and every response (errors
included) matches its documented schema, content type and headers. The deeper run over the whole
API, with the coverage and stateful phases, is in bench/results/schemathesis.md.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# Fixed by default so the suite runs the same cases every time; raise them for a deeper local
# run, e.g. FUZZ_SEED=$RANDOM FUZZ_EXAMPLES=200 pytest tests/test_api_fuzz.py
SEED = int(os.environ.get("FUZZ_SEED", "8"))
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "suppress-health-check": ["all"],
        # a seed (not Hypothesis' example database) makes the cases; FUZZ_SEED picks others
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "phases": {
            # The coverage phase enumerates every boundary value of every parameter and body
            # field, hundreds of requests per operation: the examples and random fuzzing below
            # stay within the time budget.
            "coverage": {"enabled": False},
            "stateful": {"enabled": False},
        },
    }
)


def load_schema() -> schemathesis.schemas.BaseSchema:
    """The app's own schema, fetched over WSGI at collection time (one test per operation).

    The WSGI handler closes "old" connections at each request's start and end; Django's test
    client switches that off around its requests, and so does this module around its own.
    """
    with wsgi_keeps_connections():
        return schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(), config=CONFIG)


@contextmanager
def wsgi_keeps_connections():
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


schema = load_schema()


@pytest.fixture
def fuzz_world(fresh_store, settings):
    """A committed corpus to hit (documents with indexed vectors, a source, a crawl job), then
    production-like tasks: queued in the database, not run inside the request."""
    from accounts.auth import api_key_create
    from crawl.models import CrawlJob
    from documents.models import Source
    from documents.services import document_ingest, source_get_or_create

    source = source_get_or_create(name="fuzz", kind=Source.Kind.API)
    for n, text in enumerate(
        [
            "Green tea is steamed soon after picking; black tea is fully oxidised.",
            "# Beekeeping\n\nA hive needs a queen, workers and drones.\n\n## Honey\n\nHarvest in late summer.",
        ]
    ):
        document_ingest(
            source=source,
            title=f"Doc {n}",
            url=f"https://example.com/{n}",
            text=text,
            mime="text/markdown",
            metadata={"lang": "en"},
        )
    CrawlJob.objects.create(start_url="https://example.com/", source=source)
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    with wsgi_keeps_connections():
        yield {"Authorization": f"Bearer {api_key_create(name='fuzz', scope='write')[1]}"}


def live_id(path: str) -> int | str | None:
    """An existing object's id for the path's resource (made if need be), so that detail
    operations are exercised on real rows too and not only as 404s."""
    from crawl.models import CrawlJob
    from documents.models import Chunk, Document, Source

    model = {"/api/documents/": Document, "/api/sources/": Source, "/api/chunks/": Chunk, "/api/crawl-jobs/": CrawlJob}
    for prefix, cls in model.items():
        if path.startswith(prefix):
            row = cls.objects.order_by("pk").first()
            return str(row.pk) if cls is Chunk and row else (row.pk if row else None)
    return None


@schema.parametrize()
@pytest.mark.slow
# Commits, as in production: deferred constraints are checked and on-commit hooks run.
@pytest.mark.django_db(transaction=True)
def test_every_operation_answers_as_documented(case, fuzz_world):
    params = case.path_parameters or {}
    generated = params.get("id")
    # every other generated id (by a deterministic rule) is swapped for a real one
    if isinstance(generated, (int, str)) and len(str(generated)) % 2 == 0:
        real = live_id(case.operation.path)
        if real is not None:
            params["id"] = real
    case.call_and_validate(headers=fuzz_world, checks=CHECKS)
