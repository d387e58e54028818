"""`manage.py crawl URL [--max-pages --max-depth --include --exclude --source ...] [--background]`.

In the foreground (the default) the crawl runs in this process with a progress bar and the new
chunks are embedded at the end, like `manage.py ingest`. With `--background` the job is queued
for the task worker and the command returns at once. `--resume` runs (or, with
`--background`, queues) the jobs a dead worker left behind; `--cancel ID` stops a job.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from crawl.jobs import (
    crawl_job_abandon,
    crawl_job_cancel,
    crawl_job_create,
    crawl_jobs_stale,
)
from crawl.models import CrawlJob, CrawlPage
from crawl.runner import crawl_job_run
from crawl.tasks import crawl_job_enqueue, crawl_jobs_recover
from documents.maintenance import tables_analyze
from documents.services import IngestError
from ragsite.progress import progress_bar

MAX_ERRORS_SHOWN = 20


class Command(BaseCommand):
    help = "Crawl a website into a source: politely (robots.txt, delays), within scope, incrementally."

    def add_arguments(self, parser):
        parser.add_argument("url", nargs="?", help="start URL (http or https)")
        parser.add_argument("--source", help="source name (default: the start URL's host; created if missing)")
        parser.add_argument("--max-pages", type=int, default=100, help="most pages to request (default 100)")
        parser.add_argument("--max-depth", type=int, default=3, help="most links away from the start URL (default 3)")
        parser.add_argument(
            "--include",
            action="append",
            default=[],
            metavar="PATTERN",
            help="crawl only URLs matching a pattern (repeatable): /path/glob*, full-URL glob, or re:REGEX",
        )
        parser.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="PATTERN",
            help="skip URLs matching a pattern (repeatable)",
        )
        parser.add_argument(
            "--allow-host", action="append", default=[], metavar="HOST", help="also crawl this host (glob; repeatable)"
        )
        parser.add_argument("--path-prefix", action="store_true", help="stay below the start URL's directory")
        parser.add_argument("--no-sitemap", action="store_true", help="do not seed the crawl from sitemap.xml")
        parser.add_argument(
            "--delete-missing", action="store_true", help="delete documents of pages that are gone (404/410)"
        )
        parser.add_argument("--no-embed", action="store_true", help="store and keyword-index only; embed later")
        parser.add_argument("--background", action="store_true", help="queue the job for the worker and return")
        parser.add_argument("--resume", action="store_true", help="resume jobs left running by a dead worker")
        parser.add_argument("--cancel", type=int, metavar="JOB_ID", help="cancel a queued or running job")

    def handle(self, *args, **options):
        if options["cancel"] is not None:
            return self._cancel(options["cancel"])
        if options["resume"]:
            return self._resume(background=options["background"], embed=not options["no_embed"])
        if not options["url"]:
            raise CommandError("Give a start URL (or --resume / --cancel JOB_ID).")
        try:
            job = crawl_job_create(
                start_url=options["url"],
                source=options["source"],
                max_pages=options["max_pages"],
                max_depth=options["max_depth"],
                include=options["include"],
                exclude=options["exclude"],
                allowed_hosts=options["allow_host"],
                path_prefix_only=options["path_prefix"],
                use_sitemap=not options["no_sitemap"],
                delete_missing=options["delete_missing"],
            )
        except IngestError as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from exc
        if options["background"]:
            crawl_job_enqueue(job=job)
            self.stdout.write(f"queued crawl job {job.pk} of {job.start_url} into source {job.source.name!r}")
            return None
        self._run(job, embed=not options["no_embed"])
        return None

    def _cancel(self, job_id: int) -> None:
        job = CrawlJob.objects.filter(pk=job_id).first()
        if job is None:
            raise CommandError(f"There is no crawl job {job_id}.")
        job = crawl_job_cancel(job=job)
        if job.status == CrawlJob.Status.CANCELLED:
            self.stdout.write(f"crawl job {job_id} cancelled")
        elif job.status == CrawlJob.Status.RUNNING:
            self.stdout.write(f"crawl job {job_id} will stop after its current page")
        else:
            self.stdout.write(f"crawl job {job_id} had already ended ({job.status})")

    def _resume(self, *, background: bool, embed: bool) -> None:
        if background:
            ids = crawl_jobs_recover()
            self.stdout.write(f"queued crawl jobs: {', '.join(map(str, ids)) or 'none'}")
            return
        ids = crawl_jobs_stale()
        if not ids:
            self.stdout.write("no abandoned crawl jobs")
            return
        for job_id in ids:
            self._run(CrawlJob.objects.get(pk=job_id), embed=embed)

    def _run(self, job: CrawlJob, *, embed: bool) -> None:
        from contextlib import nullcontext

        from documents.signals import changes_batched

        self.stdout.write(f"crawling {job.start_url} into source {job.source.name!r} (job {job.pk})")
        try:
            # Embedding here: one vector sync after the crawl instead of one per page.
            deferred = changes_batched() if embed else nullcontext()
            with deferred, progress_bar(None, "crawl", "page") as bar:

                def progress(current: CrawlJob) -> None:
                    bar.total = current.discovered_count
                    bar.n = current.fetched_count + current.skipped_count
                    bar.set_postfix(
                        ingested=current.ingested_count,
                        unchanged=current.unchanged_count,
                        failed=current.failed_count,
                        refresh=False,
                    )
                    bar.refresh()

                result = crawl_job_run(job.pk, on_progress=progress)
        except KeyboardInterrupt:
            job = crawl_job_abandon(job=job, reason="Interrupted from the command line.")
            raise CommandError(f"interrupted: crawl job {job.pk} cancelled; pages fetched so far are kept") from None
        if result is None:
            job.refresh_from_db()
            raise CommandError(
                f"crawl job {job.pk} is not runnable here (status {job.status}, worker {job.worker_id!r})"
            )
        self._report(result)
        tables_analyze()  # a crawl writes documents and chunks in bulk
        if embed:
            self._embed()
        if result.status == CrawlJob.Status.FAILED:
            raise CommandError(result.error or "the crawl failed")

    def _report(self, job: CrawlJob) -> None:
        failures = CrawlPage.objects.filter(job=job, status=CrawlPage.Status.FAILED).order_by("id")
        for page in failures[:MAX_ERRORS_SHOWN]:
            self.stderr.write(f"failed: {page.url}: {page.error}")
        if job.failed_count > MAX_ERRORS_SHOWN:
            self.stderr.write(f"... and {job.failed_count - MAX_ERRORS_SHOWN} more failed pages (see the admin)")
        self.stdout.write(
            f"crawl job {job.pk} {job.status}: {job.discovered_count} discovered, {job.fetched_count} fetched, "
            f"{job.ingested_count} ingested, {job.unchanged_count} unchanged, {job.gone_count} gone, "
            f"{job.skipped_count} skipped, {job.failed_count} failed"
        )

    def _embed(self) -> None:
        from vectors.foreground import embed_pending_foreground

        embed_pending_foreground(self.stdout, self.stderr)
