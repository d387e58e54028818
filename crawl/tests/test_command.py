from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from crawl.models import CrawlJob, CrawlPage


@pytest.fixture(autouse=True)
def crawl_settings(settings):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = True
    settings.CRAWL_DEFAULT_DELAY = 0
    settings.CRAWL_TIMEOUT = 0.5


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("crawl", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_it_crawls_in_the_foreground_with_a_progress_bar(site, capsys):
    out, _ = run(
        f"{site.url}/index.html",
        "--max-depth",
        "1",
        "--no-sitemap",
        "--exclude",
        "/excluded/*",
        "--source",
        "Test site",
        "--no-embed",
    )
    job = CrawlJob.objects.get()
    assert job.status == CrawlJob.Status.SUCCEEDED
    assert job.source.name == "Test site"
    assert job.exclude_patterns == ["/excluded/*"]
    assert f"crawl job {job.pk} succeeded: 3 discovered, 3 fetched, 3 ingested" in out
    assert "crawl: 100%" in capsys.readouterr().err  # the progress bar writes to the process's stderr


@pytest.mark.django_db
def test_failed_pages_are_listed(site):
    site.overrides["/start.html"] = (
        200,
        {"Content-Type": "text/html"},
        b'<html><body><p>Start.</p><a href="/error500">x</a></body></html>',
    )
    _, err = run(f"{site.url}/start.html", "--no-sitemap", "--no-embed")
    assert f"failed: {site.url}/error500: HTTP 500 Internal Server Error." in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ftp://example.com/"], "start_url: The scheme 'ftp' is not supported"),
        (["not a url"], "start_url: The URL has no scheme"),
        (["http://127.0.0.1/", "--max-pages", "-5"], "max_pages: max_pages must be at least 1"),
        (["http://127.0.0.1/", "--max-depth", "-1"], "max_depth: max_depth must be at least 0"),
        ([], "Give a start URL"),
    ],
)
@pytest.mark.django_db
def test_bad_input_is_a_command_error_and_creates_no_job(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not CrawlJob.objects.exists()


@pytest.mark.django_db
def test_private_addresses_are_refused_unless_allowed(site, settings):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(CommandError, match=r"loopback address 127\.0\.0\.1"):
        run(f"{site.url}/index.html")
    assert not CrawlJob.objects.exists()


@pytest.mark.django_db
def test_background_queues_the_job(site, settings, django_capture_on_commit_callbacks):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    from django_tasks_db.models import DBTaskResult

    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run(f"{site.url}/index.html", "--background")
    job = CrawlJob.objects.get()
    assert job.status == CrawlJob.Status.QUEUED
    assert f"queued crawl job {job.pk}" in out
    assert site.paths() == []
    assert DBTaskResult.objects.filter(args_kwargs__args=[job.pk]).exists()


@pytest.mark.django_db
def test_cancel_by_id(site):
    job = CrawlJob.objects.create(source_id=_source().pk, start_url=f"{site.url}/")
    out, _ = run("--cancel", str(job.pk))
    assert "cancelled" in out
    job.refresh_from_db()
    assert job.status == CrawlJob.Status.CANCELLED
    with pytest.raises(CommandError, match="no crawl job 999999"):
        run("--cancel", "999999")


@pytest.mark.django_db
def test_a_failing_start_url_fails_the_command(site):
    with pytest.raises(CommandError, match="The start URL could not be crawled: HTTP 500"):
        run(f"{site.url}/error500", "--no-sitemap", "--no-embed")
    assert CrawlPage.objects.get().status == CrawlPage.Status.FAILED


def _source():
    from documents.models import Source

    return Source.objects.create(name="s")
