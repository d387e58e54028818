"""Crawl jobs through the REST API and the admin, against the real test site on 127.0.0.1."""

from __future__ import annotations

import pytest
from django.urls import reverse

from crawl.models import CrawlJob, CrawlPage
from documents.models import Document, Source

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def crawl_settings(settings):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = True
    settings.CRAWL_DEFAULT_DELAY = 0
    settings.CRAWL_TIMEOUT = 0.5
    return settings


def test_creating_a_crawl_job_through_the_api_queues_and_runs_it(api, site, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        response = api.post(
            "/api/crawl-jobs/",
            {
                "start_url": f"{site.url}/docs/index.html",
                "max_depth": 1,
                "max_pages": 5,
                "source": "site-docs",
                "exclude": ["*/deep/*"],
            },
            content_type="application/json",
        )
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    body = api.get(f"/api/crawl-jobs/{job_id}/").json()
    assert body["status"] == "succeeded" and body["source"] == "site-docs"
    assert body["ingested_count"] >= 1 and body["fetched_count"] >= body["ingested_count"]
    assert body["exclude_patterns"] == ["*/deep/*"]
    pages = api.get(f"/api/crawl-jobs/{job_id}/pages/").json()
    assert pages["count"] == CrawlPage.objects.filter(job_id=job_id).count()
    assert all("/deep/" not in p["url"] for p in pages["results"])
    assert Document.objects.filter(source__name="site-docs").count() == body["ingested_count"]
    assert api.get("/api/crawl-jobs/", {"status": "succeeded"}).json()["count"] == 1


def test_cancelling_a_queued_job_through_the_api(api, site):
    response = api.post("/api/crawl-jobs/", {"start_url": f"{site.url}/index.html"}, content_type="application/json")
    job_id = response.json()["id"]  # on_commit never ran: the job is still queued
    cancelled = api.post(f"/api/crawl-jobs/{job_id}/cancel/")
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"start_url": "not a url"}, "start_url"),
        ({"start_url": "ftp://example.com/"}, "start_url"),
        ({"start_url": "http://127.0.0.1:9/", "max_pages": -1}, "max_pages"),
        ({"start_url": "http://127.0.0.1:9/", "max_depth": -3}, "max_depth"),
        ({"start_url": "http://127.0.0.1:9/", "include": ["re:("]}, "include"),
        ({"start_url": "http://127.0.0.1:9/", "exclude": ["re:(a)\\1"]}, "exclude"),
        ({"start_url": "http://127.0.0.1:9/", "exclude": ["re:" + "a" * 600]}, "exclude"),
        ({"start_url": "http://127.0.0.1:9/", "include": [f"/p{i}/*" for i in range(101)]}, "include"),
        ({}, "start_url"),
    ],
)
def test_bad_crawl_input_is_a_400_naming_the_field_and_creates_no_job(api, body, field):
    response = api.post("/api/crawl-jobs/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert not CrawlJob.objects.exists()


def test_a_private_address_is_refused_unless_allowed(api, settings):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = False
    response = api.post("/api/crawl-jobs/", {"start_url": "http://127.0.0.1:9/"}, content_type="application/json")
    assert response.status_code == 400
    assert "start_url" in response.json()["error"]["fields"]
    assert not CrawlJob.objects.exists()


def test_read_only_keys_cannot_start_crawls(client, api_key):
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {api_key('read')}"
    response = client.post("/api/crawl-jobs/", {"start_url": "http://example.com/"}, content_type="application/json")
    assert response.status_code == 403
    assert client.get("/api/crawl-jobs/").status_code == 200
    assert client.get("/api/crawl-jobs/424242/").status_code == 404


def test_the_admin_add_form_creates_and_queues_a_job(staff_client, site, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        response = staff_client.post(
            reverse("admin:crawl_crawljob_add"),
            {
                "start_url": f"{site.url}/index.html",
                "max_pages": 3,
                "max_depth": 1,
                "use_sitemap": "on",
                "include": "",
                "exclude": "",
                "hosts": "",
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = CrawlJob.objects.get()
    assert job.status == CrawlJob.Status.SUCCEEDED and job.fetched_count >= 1
    detail = staff_client.get(reverse("admin:crawl_crawljob_change", args=[job.pk]))
    assert detail.status_code == 200 and b"Ingested count" in detail.content


def test_the_admin_add_form_shows_errors_instead_of_creating(staff_client):
    response = staff_client.post(
        reverse("admin:crawl_crawljob_add"), {"start_url": "gopher://x", "max_pages": 3, "max_depth": 1}
    )
    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert not CrawlJob.objects.exists()


def test_the_source_admin_action_crawls_the_base_url(staff_client, site, fresh_store, run_commit_hooks):
    source = Source.objects.create(name="site", kind=Source.Kind.CRAWL, base_url=f"{site.url}/docs/a.html")
    with run_commit_hooks():
        response = staff_client.post(
            reverse("admin:documents_source_changelist"), {"action": "crawl", "_selected_action": [source.pk]}
        )
    assert response.status_code == 302
    job = CrawlJob.objects.get()
    assert job.source == source and job.status in (CrawlJob.Status.SUCCEEDED, CrawlJob.Status.RUNNING)


def test_the_admin_cancel_action_cancels_queued_jobs(staff_client):
    source = Source.objects.create(name="s")
    job = CrawlJob.objects.create(source=source, start_url="http://example.com/")
    staff_client.post(reverse("admin:crawl_crawljob_changelist"), {"action": "cancel", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == CrawlJob.Status.CANCELLED


def test_crawl_jobs_are_listed_by_source_id_or_name_and_a_unicode_digit_breaks_nothing(api, site):
    for name in ("docs", "²"):
        response = api.post(
            "/api/crawl-jobs/", {"start_url": f"{site.url}/index.html", "source": name}, content_type="application/json"
        )
        assert response.status_code == 201, response.content
    docs = Source.objects.get(name="docs")
    listed = {
        value: [job["source"] for job in api.get("/api/crawl-jobs/", {"source": value}).json()["results"]]
        for value in ("docs", str(docs.pk), "²", "99999999999999999999")
    }
    assert listed == {"docs": ["docs"], str(docs.pk): ["docs"], "²": ["²"], "99999999999999999999": []}


def test_a_source_name_over_200_characters_is_a_400_naming_the_source(api):
    response = api.post(
        "/api/crawl-jobs/", {"start_url": "http://127.0.0.1:9/", "source": "x" * 201}, content_type="application/json"
    )
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"source"}
    assert not CrawlJob.objects.exists()
