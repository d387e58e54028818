"""Crawl jobs and their pages. The CrawlPage rows are the job's frontier: a restarted worker
continues from them instead of starting over."""

from __future__ import annotations

from django.db import models

from documents.models import Document, Source


class CrawlJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="crawl_jobs")
    start_url = models.URLField(max_length=2000)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    max_pages = models.PositiveIntegerField(default=100)
    max_depth = models.PositiveIntegerField(default=3)
    include_patterns = models.JSONField(default=list, blank=True)
    exclude_patterns = models.JSONField(default=list, blank=True)
    allowed_hosts = models.JSONField(default=list, blank=True)
    path_prefix_only = models.BooleanField(default=False)
    use_sitemap = models.BooleanField(default=True)
    delete_missing = models.BooleanField(default=False, help_text="Delete documents of pages that are gone (404/410).")
    discovered_count = models.PositiveIntegerField(default=0)
    fetched_count = models.PositiveIntegerField(default=0)
    ingested_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    gone_count = models.PositiveIntegerField(default=0, help_text="Pages that answered 404 or 410.")
    skipped_count = models.PositiveIntegerField(
        default=0, help_text="Pages not fetched or not ingested: robots.txt, noindex, cancelled."
    )
    # Set once the frontier is seeded (start URL, sitemap, earlier pages), so a restarted worker
    # does not seed again.
    seeded_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    worker_id = models.CharField(max_length=100, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"Crawl {self.pk} of {self.start_url}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class CrawlPage(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        FETCHED = "fetched", "Fetched"
        INGESTED = "ingested", "Ingested"
        UNCHANGED = "unchanged", "Unchanged"
        SKIPPED = "skipped", "Skipped"
        GONE = "gone", "Gone"
        FAILED = "failed", "Failed"

    job = models.ForeignKey(CrawlJob, on_delete=models.CASCADE, related_name="pages")
    url = models.URLField(max_length=2000)
    depth = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    http_status = models.PositiveIntegerField(null=True, blank=True)
    etag = models.CharField(max_length=500, blank=True)
    last_modified = models.CharField(max_length=100, blank=True)
    content_hash = models.CharField(max_length=64, blank=True)
    document = models.ForeignKey(Document, on_delete=models.SET_NULL, null=True, blank=True, related_name="crawl_pages")
    error = models.TextField(blank=True)
    discovered_at = models.DateTimeField(auto_now_add=True)
    fetched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job_id", "depth", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "url"], name="crawlpage_unique_job_url")]
        indexes = [models.Index(fields=["job", "status", "depth"], name="crawlpage_frontier")]

    def __str__(self) -> str:
        return self.url
