from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from django.db import connection
from django.utils import timezone

from crawl.jobs import crawl_job_cancel, crawl_job_create, crawl_jobs_stale
from crawl.models import CrawlJob, CrawlPage
from crawl.runner import crawl_job_run
from crawl.tasks import crawl_job_enqueue, crawl_jobs_recover
from crawl.tests.site import in_thread, layered_gzip
from documents.models import Chunk, Document, Source
from documents.services import IngestError
from documents.tests.pdf_writer import orchard_report_pdf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def crawl_settings(settings):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = True
    settings.CRAWL_DEFAULT_DELAY = 0
    settings.CRAWL_TIMEOUT = 0.5
    settings.CRAWL_CONCURRENCY = 2
    settings.CRAWL_MAX_PAGE_BYTES = 512 * 1024
    settings.CRAWL_MAX_REDIRECTS = 3
    return settings


def crawl(site, *, start: str = "/index.html", **options):
    job = crawl_job_create(start_url=f"{site.url}{start}", **options)
    return crawl_job_run(job.pk)


def page_paths(job, status=None) -> set[str]:
    pages = CrawlPage.objects.filter(job=job)
    if status:
        pages = pages.filter(status=status)
    return {urlsplit(url).path for url in pages.values_list("url", flat=True)}


def fetched_paths(site) -> list[str]:
    return [p for p in site.paths() if p not in ("/robots.txt", "/sitemap.xml")]


SITE_PAGES = {
    "/index.html",
    "/docs/",
    "/docs/index.html",
    "/docs/a.html",
    "/docs/b.html",
    "/docs/notes.txt",
    "/docs/guide.md",
    "/docs/deep/d1.html",
    "/docs/deep/d2.html",
    "/docs/deep/d3.html",
    "/blog/post1.html",
    "/blog/post2.html",
    "/orphan.html",
}


@pytest.mark.django_db
def test_a_crawl_ingests_the_site_and_never_leaves_it(site):
    job = crawl(site, max_depth=5, exclude=["/excluded/*"])

    assert job.status == CrawlJob.Status.SUCCEEDED
    assert page_paths(job, CrawlPage.Status.INGESTED) == SITE_PAGES
    assert job.ingested_count == len(SITE_PAGES) == job.fetched_count == job.discovered_count
    assert job.failed_count == 0
    documents = Document.objects.filter(source=job.source)
    assert {urlsplit(d.url).path for d in documents} == SITE_PAGES
    assert documents.get(url=f"{site.url}/docs/a.html").title == "Page A"
    assert job.source.name == f"127.0.0.1:{site.port}"
    # robots.txt, exclude patterns, rel=nofollow and other hosts kept these from being requested:
    requested = site.paths()
    assert not [p for p in requested if p.startswith(("/private/", "/excluded/", "/nofollowed"))]
    assert {r.headers["host"] for r in site.requests} == {f"127.0.0.1:{site.port}"}
    # every page once; the tracking-parameter link to the home page was the same page
    assert len(fetched_paths(site)) == len(set(fetched_paths(site)))


@pytest.mark.django_db
def test_the_sitemap_seeds_pages_nothing_links_to(site):
    job = crawl(site, max_depth=1)
    assert "/orphan.html" in page_paths(job, CrawlPage.Status.INGESTED)
    without = crawl(site, max_depth=1, use_sitemap=False, source="no-sitemap")
    assert "/orphan.html" not in page_paths(without)


@pytest.mark.django_db
def test_max_depth_limits_how_far_links_are_followed(site):
    job = crawl(site, max_depth=1, use_sitemap=False)
    assert page_paths(job) == {"/index.html", "/docs/", "/blog/post1.html", "/excluded/skip.html"}
    assert not [p for p in site.paths() if p.startswith("/docs/deep/")]


@pytest.mark.django_db
def test_max_pages_limits_how_many_pages_are_requested(site):
    job = crawl(site, max_pages=3, max_depth=5)
    assert job.discovered_count == 3
    assert job.fetched_count == 3
    assert len(fetched_paths(site)) == 3
    assert CrawlPage.objects.filter(job=job).count() == 3


@pytest.mark.django_db
def test_include_patterns_limit_the_crawl_but_the_start_page_is_always_crawled(site):
    job = crawl(site, max_depth=5, include=["/docs/*"], use_sitemap=False)
    paths = page_paths(job, CrawlPage.Status.INGESTED)
    assert "/index.html" in paths
    assert {p for p in paths if p != "/index.html"} == {
        p for p in SITE_PAGES if p.startswith("/docs/") and p != "/docs/index.html"
    }


@pytest.mark.django_db
def test_path_prefix_only_stays_below_the_start_directory(site):
    job = crawl(site, start="/docs/", max_depth=5, path_prefix_only=True)
    assert page_paths(job) == {p for p in SITE_PAGES if p.startswith("/docs/")}


@pytest.mark.django_db
def test_allowed_hosts_let_the_crawl_reach_another_host(site):
    job = crawl(site, max_depth=1, use_sitemap=False, allowed_hosts=[f"localhost:{site.port}"])
    assert f"{site.other_host_url}/docs/a.html" in set(CrawlPage.objects.filter(job=job).values_list("url", flat=True))


def chunk_state(source) -> dict:
    return {
        str(c.id): (c.document.url, c.content_hash, c.index_status)
        for c in Chunk.objects.filter(document__source=source)
    }


@pytest.mark.django_db
def test_a_recrawl_of_an_unchanged_site_reembeds_nothing_and_a_changed_page_only_itself(site):
    first = crawl(site, max_depth=5)
    before = chunk_state(first.source)
    assert before
    Chunk.objects.update(index_status=Chunk.IndexStatus.INDEXED)  # as if the sync had run
    site.clear()

    second = crawl(site, max_depth=5)
    assert second.source == first.source
    assert second.ingested_count == 0
    assert second.unchanged_count == second.fetched_count == first.fetched_count
    assert {k: v[:2] for k, v in chunk_state(second.source).items()} == {k: v[:2] for k, v in before.items()}
    assert not Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING).exists()
    conditional = [r for r in site.requests if "if-none-match" in r.headers]
    assert len(conditional) == first.ingested_count  # every page was asked "changed since?"

    path = site.root / "docs" / "a.html"
    path.write_text(path.read_text().replace("explains installation", "now explains upgrades"))
    third = crawl(site, max_depth=5)
    assert third.ingested_count == 1
    assert page_paths(third, CrawlPage.Status.INGESTED) == {"/docs/a.html"}
    pending = Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING)
    assert {c.document.url for c in pending} == {f"{site.url}/docs/a.html"}


@pytest.mark.django_db
def test_same_content_without_validators_is_not_ingested_again(site):
    body = b"<html><head><title>Plain</title></head><body><p>No ETag, no Last-Modified here.</p></body></html>"
    site.overrides["/plain.html"] = (200, {"Content-Type": "text/html"}, body)
    first = crawl(site, start="/plain.html", max_depth=0)
    assert first.ingested_count == 1
    second = crawl(site, start="/plain.html", max_depth=0)
    assert second.unchanged_count == 1
    assert CrawlPage.objects.get(job=second).document == CrawlPage.objects.get(job=first).document


@pytest.mark.django_db
def test_pages_that_are_gone_are_reported_and_their_documents_deleted_when_asked(site):
    first = crawl(site, max_depth=5)
    (site.root / "docs" / "b.html").unlink()
    (site.root / "blog" / "post2.html").unlink()
    # post2 is no longer linked either: only the re-crawl of known documents finds it gone
    post1 = site.root / "blog" / "post1.html"
    post1.write_text(post1.read_text().replace('href="/blog/post2.html"', 'href="/index.html"'))

    kept = crawl(site, max_depth=5)
    assert page_paths(kept, CrawlPage.Status.GONE) == {"/docs/b.html", "/blog/post2.html"}
    assert kept.gone_count == 2
    assert Document.objects.filter(source=first.source, url=f"{site.url}/docs/b.html").exists()

    deleted = crawl(site, max_depth=5, delete_missing=True)
    assert deleted.gone_count == 2
    assert not Document.objects.filter(source=first.source, url=f"{site.url}/docs/b.html").exists()
    assert not Document.objects.filter(source=first.source, url=f"{site.url}/blog/post2.html").exists()
    gone = CrawlPage.objects.get(job=deleted, url=f"{site.url}/docs/b.html")
    assert gone.http_status == 404
    assert "Its document was deleted" in gone.error


@pytest.mark.django_db
def test_misbehaving_pages_fail_with_a_reason_and_the_crawl_goes_on(site):
    links = ["/slow", "/error500", "/loop-a", "/endless/0", "/huge", "/huge-chunked", "/image.gif", "/docs/a.html"]
    anchors = "".join(f'<a href="{link}">{link}</a>' for link in links)
    site.overrides["/bad.html"] = (
        200,
        {"Content-Type": "text/html"},
        f"<html><title>Bad</title><body><p>Links.</p>{anchors}</body></html>".encode(),
    )
    job = crawl(site, start="/bad.html", max_depth=1, use_sitemap=False)

    errors = {urlsplit(p.url).path: p.error for p in CrawlPage.objects.filter(job=job, status=CrawlPage.Status.FAILED)}
    assert errors["/slow"].startswith("Timed out")
    assert errors["/error500"] == "HTTP 500 Internal Server Error."
    assert errors["/loop-a"].startswith("Redirect loop")
    assert errors["/endless/0"] == "More than 3 redirects."
    assert errors["/huge"].startswith("Too large")
    assert errors["/huge-chunked"].startswith("Too large")
    assert errors["/image.gif"] == "Unsupported content type image/gif."
    assert job.failed_count == 7
    assert page_paths(job, CrawlPage.Status.INGESTED) == {"/bad.html", "/docs/a.html"}
    assert job.status == CrawlJob.Status.SUCCEEDED


@pytest.mark.django_db
def test_a_start_url_that_fails_fails_the_job(site):
    job = crawl(site, start="/error500", use_sitemap=False)
    assert job.status == CrawlJob.Status.FAILED
    assert "HTTP 500" in job.error


@pytest.mark.django_db
def test_an_unreachable_robots_txt_fails_pages_with_the_reason(site):
    site.overrides["/robots.txt"] = (503, {}, b"busy")
    job = crawl(site)
    page = CrawlPage.objects.get(job=job)
    assert page.status == CrawlPage.Status.FAILED
    assert "robots.txt" in page.error and "HTTP 503" in page.error
    assert fetched_paths(site) == []


@pytest.mark.django_db
def test_noindex_pages_are_followed_but_not_ingested(site):
    site.overrides["/noindex.html"] = (
        200,
        {"Content-Type": "text/html"},
        b'<html><head><meta name="robots" content="noindex"></head><body><a href="/docs/a.html">a</a></body></html>',
    )
    job = crawl(site, start="/noindex.html", max_depth=1, use_sitemap=False)
    assert page_paths(job, CrawlPage.Status.SKIPPED) == {"/noindex.html"}
    assert page_paths(job, CrawlPage.Status.INGESTED) == {"/docs/a.html"}


@pytest.mark.django_db
def test_cancelling_mid_crawl_stops_and_keeps_what_was_fetched(site, settings):
    settings.CRAWL_CONCURRENCY = 1
    job = crawl_job_create(start_url=f"{site.url}/index.html", max_depth=5, exclude=["/excluded/*"])
    seen = []

    def cancel_after_two(progress):
        seen.append(progress.fetched_count)
        if progress.fetched_count == 2:
            crawl_job_cancel(job=progress)

    job = crawl_job_run(job.pk, on_progress=cancel_after_two)
    assert job.status == CrawlJob.Status.CANCELLED
    assert job.finished_at is not None
    assert job.ingested_count == 2
    assert Document.objects.filter(source=job.source).count() == 2
    left = CrawlPage.objects.filter(job=job, status=CrawlPage.Status.SKIPPED)
    assert left.count() == job.skipped_count > 0
    assert all("cancelled" in p.error for p in left)
    assert not CrawlPage.objects.filter(job=job, status=CrawlPage.Status.QUEUED).exists()
    assert len(fetched_paths(site)) <= 3  # at most the one in flight besides the two kept


@pytest.mark.django_db
def test_cancelling_a_queued_job_ends_it_without_running(site):
    job = crawl_job_create(start_url=f"{site.url}/index.html")
    job = crawl_job_cancel(job=job)
    assert job.status == CrawlJob.Status.CANCELLED
    assert crawl_job_run(job.pk) is None
    assert site.paths() == []


class WorkerDied(BaseException):
    """Stands in for a worker process dying: nothing in the runner catches it."""


@pytest.mark.django_db
def test_a_job_abandoned_by_a_dead_worker_is_resumed_without_refetching_finished_pages(site, settings):
    settings.CRAWL_CONCURRENCY = 1
    job = crawl_job_create(start_url=f"{site.url}/index.html", max_depth=5, exclude=["/excluded/*"])

    def die_after_three(progress):
        if progress.fetched_count == 3:
            raise WorkerDied

    with pytest.raises(WorkerDied):
        crawl_job_run(job.pk, worker_id="dead", on_progress=die_after_three)
    job.refresh_from_db()
    assert job.status == CrawlJob.Status.RUNNING
    finished = {
        urlsplit(u).path
        for u in CrawlPage.objects.filter(job=job).exclude(status="queued").values_list("url", flat=True)
    }
    assert len(finished) == 3

    # A live worker's job is not taken over...
    assert crawl_job_run(job.pk, worker_id="eager") is None
    assert crawl_jobs_stale() == []
    # ...a silent one's is.
    CrawlJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert crawl_jobs_stale() == [job.pk]
    job = crawl_job_run(job.pk, worker_id="second")
    assert job.status == CrawlJob.Status.SUCCEEDED
    assert job.worker_id == "second"
    assert job.ingested_count == len(SITE_PAGES)
    for path in finished:
        assert site.count(path) == 1, path


@pytest.mark.django_db
def test_a_catastrophic_exclude_regex_does_not_stall_the_crawl_of_a_long_url(site):
    # Python's re would need ~2**5000 steps for "(a+)+$" on the first link (see test_scope for
    # the same check in a child process that a hang cannot take down).
    long_path = "/" + "a" * 1900 + "!"
    links = f'<a href="{long_path}">long</a> <a href="/x/aaaa">excluded</a>'
    site.overrides["/start.html"] = (200, {"Content-Type": "text/html"}, f"<html><body>{links}</body></html>".encode())
    site.overrides[long_path] = (200, {"Content-Type": "text/plain"}, b"A page behind a long URL.")
    job = crawl(site, start="/start.html", exclude=["re:(a+)+$"], use_sitemap=False)
    assert job.status == CrawlJob.Status.SUCCEEDED
    assert page_paths(job) == {"/start.html", long_path}


@pytest.mark.django_db
def test_links_longer_than_a_url_column_are_out_of_scope_and_the_crawl_goes_on(site):
    links = '<a href="/' + "b" * 2500 + '">too long</a> <a href="/docs/a.html">fine</a>'
    site.overrides["/start.html"] = (200, {"Content-Type": "text/html"}, f"<html><body>{links}</body></html>".encode())
    job = crawl(site, start="/start.html", max_depth=1, use_sitemap=False)
    assert job.status == CrawlJob.Status.SUCCEEDED
    assert page_paths(job) == {"/start.html", "/docs/a.html"}


@pytest.mark.django_db
def test_a_redirect_to_an_overlong_url_fails_only_that_page(site):
    target = "/" + "c" * 2500
    site.overrides["/start.html"] = (
        200,
        {"Content-Type": "text/html"},
        b'<a href="/jump">j</a> <a href="/docs/a.html">a</a>',
    )
    site.overrides["/jump"] = (302, {"Location": target}, b"")
    job = crawl(site, start="/start.html", max_depth=1, use_sitemap=False)
    assert job.status == CrawlJob.Status.SUCCEEDED
    jump = CrawlPage.objects.get(job=job, url__endswith="/jump")
    assert jump.status == CrawlPage.Status.FAILED and "longer than 2000 characters" in jump.error
    assert CrawlPage.objects.get(job=job, url__endswith="/docs/a.html").status == CrawlPage.Status.INGESTED


@pytest.mark.django_db
def test_a_compression_bomb_fails_its_page_and_the_crawl_finishes(site):
    bomb = layered_gzip(b"<html><body><p>bomb</p>", 128 * 1024 * 1024, 2)
    site.overrides["/bomb.html"] = (200, {"Content-Type": "text/html", "Content-Encoding": "gzip, gzip"}, bomb)
    site.overrides["/start.html"] = (
        200,
        {"Content-Type": "text/html"},
        b'<html><body><a href="/bomb.html">b</a> <a href="/docs/a.html">a</a></body></html>',
    )
    job = crawl(site, start="/start.html", max_depth=1, use_sitemap=False)
    assert job.status == CrawlJob.Status.SUCCEEDED
    page = CrawlPage.objects.get(job=job, url__endswith="/bomb.html")
    assert page.status == CrawlPage.Status.FAILED
    assert page.error == f"Too large: more than {512 * 1024} bytes once decoded."
    assert CrawlPage.objects.get(job=job, url__endswith="/docs/a.html").status == CrawlPage.Status.INGESTED


@pytest.mark.django_db
def test_a_compression_bomb_as_robots_txt_still_lets_the_crawl_obey_its_rules(site):
    bomb = layered_gzip(b"User-agent: *\nDisallow: /docs/\n", 128 * 1024 * 1024, 2)
    site.overrides["/robots.txt"] = (200, {"Content-Type": "text/plain", "Content-Encoding": "gzip, gzip"}, bomb)
    job = crawl(site, max_depth=1, use_sitemap=False)
    assert job.status == CrawlJob.Status.SUCCEEDED
    assert CrawlPage.objects.get(job=job, url__endswith="/index.html").status == CrawlPage.Status.INGESTED
    assert not any(path.startswith("/docs/") for path in fetched_paths(site))


@pytest.mark.django_db(transaction=True)
def test_trickling_pages_fail_at_the_total_deadline_and_the_crawl_finishes(site):
    links = "".join(f'<a href="/trickle?rate=9&size=10000&n={i}">t{i}</a>' for i in range(4))
    site.overrides["/start.html"] = (200, {"Content-Type": "text/html"}, f"<html><body>{links}</body></html>".encode())
    job = crawl_job_create(start_url=f"{site.url}/start.html", max_depth=1, use_sitemap=False)

    def run():
        try:
            return crawl_job_run(job.pk)
        finally:
            connection.close()

    job = in_thread(run)
    assert job.status == CrawlJob.Status.SUCCEEDED
    slow = CrawlPage.objects.filter(job=job, url__contains="/trickle")
    assert slow.count() == 4
    assert {(p.status, p.error) for p in slow} == {
        (CrawlPage.Status.FAILED, "Timed out: the page took longer than 2 s.")
    }


@pytest.mark.django_db(transaction=True)
def test_cancelling_stops_pages_in_flight_without_waiting_for_their_deadline(site, settings):
    settings.CRAWL_TIMEOUT = 60  # a 240 s deadline: only the cancel can end these fetches in time
    links = "".join(f'<a href="/trickle?rate=9&size=10000&n={i}">t{i}</a>' for i in range(4))
    site.overrides["/start.html"] = (200, {"Content-Type": "text/html"}, f"<html><body>{links}</body></html>".encode())
    job = crawl_job_create(start_url=f"{site.url}/start.html", max_depth=1, use_sitemap=False)

    def run():
        try:
            return crawl_job_run(job.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while len(site.trickling) < 2 and thread.is_alive():
        time.sleep(0.05)
    crawl_job_cancel(job=job)
    thread.join(60)
    assert not thread.is_alive(), "the crawl went on after the cancel"
    job.refresh_from_db()
    assert job.status == CrawlJob.Status.CANCELLED
    slow = CrawlPage.objects.filter(job=job, url__contains="/trickle")
    assert {p.status for p in slow} == {CrawlPage.Status.SKIPPED}


@pytest.mark.django_db
def test_a_page_with_an_unclosed_div_per_post_is_ingested_whole_and_its_last_link_followed(site):
    posts = "".join(f"<div class='post'><h2>Post {n}</h2><p>Diary entry {n} of the year.</p>" for n in range(400))
    html = f"<html><head><title>Diary</title></head><body>{posts}<a href='/docs/a.html'>next</a></body></html>"
    site.overrides["/diary.html"] = (200, {"Content-Type": "text/html"}, html.encode())
    job = crawl(site, start="/diary.html", max_depth=1, use_sitemap=False)
    assert job.status == CrawlJob.Status.SUCCEEDED
    diary = Document.objects.get(url=f"{site.url}/diary.html")
    assert diary.text.count("of the year") == 400
    assert page_paths(job) == {"/diary.html", "/docs/a.html"}


@pytest.mark.django_db
def test_the_content_decides_over_the_served_content_type(site):
    site.overrides["/report"] = (200, {"Content-Type": "text/html"}, orchard_report_pdf())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("slides.pptx", bytes(range(256)) * 64)
    site.overrides["/slides.pdf"] = (200, {"Content-Type": "application/pdf"}, buffer.getvalue())
    site.overrides["/start.html"] = (
        200,
        {"Content-Type": "text/html"},
        b'<html><body><a href="/report">r</a> <a href="/slides.pdf">s</a></body></html>',
    )
    job = crawl(site, start="/start.html", max_depth=1, use_sitemap=False)
    report = Document.objects.get(url=f"{site.url}/report")
    assert report.mime_type == "application/pdf" and "Orchard Report 2024" in report.text
    slides = CrawlPage.objects.get(job=job, url__endswith="/slides.pdf")
    assert slides.status == CrawlPage.Status.FAILED
    assert slides.error == "Unsupported content type application/pdf, but the content is application/zip."


@pytest.mark.django_db
def test_a_finished_job_is_not_run_again(site):
    job = crawl(site, max_depth=0)
    site.clear()
    assert crawl_job_run(job.pk) is None
    assert site.paths() == []


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"start_url": "not a url"}, "start_url", "no scheme"),
        ({"start_url": "http://"}, "start_url", "no host"),
        ({"start_url": "ftp://example.com/"}, "start_url", "not supported"),
        ({"start_url": "http://no-such-host.invalid/"}, "start_url", "does not resolve"),
        ({"max_pages": -1}, "max_pages", "at least 1"),
        ({"max_pages": 0}, "max_pages", "at least 1"),
        ({"max_depth": -2}, "max_depth", "at least 0"),
        ({"max_depth": "deep"}, "max_depth", "whole number"),
        ({"include": ["re:(unclosed"]}, "include", "cannot be used"),
        ({"exclude": [""], "include": "re:["}, "include", "cannot be used"),
        ({"exclude": ["re:(?!/private)"]}, "exclude", "RE2 syntax"),
        ({"exclude": [f"/p{i}/*" for i in range(101)]}, "exclude", "at most 100 patterns"),
    ],
)
@pytest.mark.django_db
def test_bad_input_is_refused_with_the_field_and_no_job(site, options, field, message):
    options = {"start_url": f"{site.url}/index.html", **options}
    with pytest.raises(IngestError, match=message) as error:
        crawl_job_create(**options)
    assert error.value.field == field
    assert not CrawlJob.objects.exists()


@pytest.mark.django_db
def test_a_private_address_is_refused_unless_allowed(site, settings):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(IngestError, match="CRAWL_ALLOW_PRIVATE_ADDRESSES") as error:
        crawl_job_create(start_url=f"{site.url}/index.html")
    assert error.value.field == "start_url"
    assert not CrawlJob.objects.exists()
    assert not Source.objects.exists()


@pytest.mark.django_db
def test_a_named_source_is_created_or_reused(site):
    source = Source.objects.create(name="Docs", kind=Source.Kind.CRAWL)
    assert crawl_job_create(start_url=f"{site.url}/", source="Docs").source == source
    assert crawl_job_create(start_url=f"{site.url}/", source=source).source == source
    new = crawl_job_create(start_url=f"{site.url}/", source="Fresh")
    assert new.source.kind == Source.Kind.CRAWL
    assert new.source.base_url == f"{site.url}/"


@pytest.mark.slow  # the immediate backend also runs the vector sync, which loads the model
@pytest.mark.django_db
def test_an_enqueued_job_runs_in_the_task_worker(site, django_capture_on_commit_callbacks):
    job = crawl_job_create(start_url=f"{site.url}/index.html", max_depth=0)
    with django_capture_on_commit_callbacks(execute=True):
        crawl_job_enqueue(job=job)
    job.refresh_from_db()
    assert job.status == CrawlJob.Status.SUCCEEDED
    assert job.ingested_count == 1


@pytest.mark.django_db
def test_recovery_requeues_abandoned_jobs(site, django_capture_on_commit_callbacks):
    job = crawl_job_create(start_url=f"{site.url}/index.html", max_depth=0)
    CrawlJob.objects.filter(pk=job.pk).update(
        status=CrawlJob.Status.RUNNING, worker_id="gone", heartbeat_at=timezone.now() - timedelta(hours=2)
    )
    assert crawl_jobs_recover() == [job.pk]  # the immediate task backend runs it right away
    job.refresh_from_db()
    assert job.status == CrawlJob.Status.SUCCEEDED


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_killing_the_worker_process_mid_crawl_and_restarting_finishes_without_refetching(site, tmp_path):
    site.page_delay = 0.3
    job = crawl_job_create(start_url=f"{site.url}/index.html", max_depth=5, exclude=["/excluded/*"])
    db = connection.settings_dict
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        "DJANGO_SETTINGS_MODULE": "ragsite.test_settings",
        # the host is a socket directory with the embedded server: percent-encoded, as URLs want it
        "DATABASE_URL": f"postgres://{db['USER']}{':' + db['PASSWORD'] if db['PASSWORD'] else ''}"
        f"@{quote(db['HOST'] or '', safe='')}:{db['PORT']}/{db['NAME']}",
        "DATA_DIR": str(tmp_path / "worker-data"),
        # the killed worker only queues vector syncs; embedding is not what this test is about
        "TASKS_BACKEND": "database",
        "CRAWL_ALLOW_PRIVATE_ADDRESSES": "true",
        "CRAWL_CONCURRENCY": "1",
        "CRAWL_DEFAULT_DELAY": "0",
    }
    script = f"import django; django.setup(); from crawl.runner import crawl_job_run; crawl_job_run({job.pk})"
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 120
        while CrawlPage.objects.filter(job=job).exclude(status="queued").count() < 3:
            assert worker.poll() is None, "the worker ended before it could be killed"
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    finished = {
        urlsplit(u).path
        for u in CrawlPage.objects.filter(job=job).exclude(status="queued").values_list("url", flat=True)
    }
    job.refresh_from_db()
    assert job.status == CrawlJob.Status.RUNNING
    assert job.fetched_count == len(finished)

    site.page_delay = 0
    CrawlJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    job = crawl_job_run(job.pk)
    assert job.status == CrawlJob.Status.SUCCEEDED
    assert page_paths(job, CrawlPage.Status.INGESTED) == SITE_PAGES
    assert job.fetched_count == len(SITE_PAGES)
    for path in finished:
        assert site.count(path) == 1, path


@pytest.fixture
def database_tasks(settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def queued_tasks():
    from django_tasks_db.models import DBTaskResult

    from crawl.tasks import crawl_job_run_task

    return list(
        DBTaskResult.objects.filter(status="READY", task_path=crawl_job_run_task.module_path).order_by("enqueued_at")
    )


@pytest.mark.django_db
def test_a_starting_worker_queues_unfinished_jobs_once(site, database_tasks):
    from ragsite.worker import send_worker_started

    running = crawl_job_create(start_url=f"{site.url}/index.html")
    CrawlJob.objects.filter(pk=running.pk).update(status=CrawlJob.Status.RUNNING, heartbeat_at=timezone.now())
    fresh = crawl_job_create(start_url=f"{site.url}/index.html")  # a foreground crawl about to claim it
    old = crawl_job_create(start_url=f"{site.url}/index.html")
    CrawlJob.objects.filter(pk=old.pk).update(requested_at=timezone.now() - timedelta(hours=1))
    done = crawl_job_create(start_url=f"{site.url}/index.html")
    CrawlJob.objects.filter(pk=done.pk).update(status=CrawlJob.Status.SUCCEEDED)

    send_worker_started()
    send_worker_started()
    assert [t.args_kwargs["args"] for t in queued_tasks()] == [[running.pk], [old.pk]]
    assert fresh.pk not in crawl_jobs_recover()


@pytest.mark.django_db
def test_a_job_running_in_another_worker_is_watched_until_its_heartbeat_could_be_stale(site, database_tasks, settings):
    from crawl.tasks import crawl_job_run_task

    settings.CRAWL_STALE_SECONDS = 300
    job = crawl_job_create(start_url=f"{site.url}/index.html")
    beat = timezone.now()
    CrawlJob.objects.filter(pk=job.pk).update(status=CrawlJob.Status.RUNNING, worker_id="alive", heartbeat_at=beat)

    assert crawl_job_run_task.call(job.pk) is None
    [watch] = queued_tasks()
    assert watch.args_kwargs["args"] == [job.pk]
    assert watch.run_after >= beat + timedelta(seconds=300)
    assert site.paths() == []
