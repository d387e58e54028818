"""Crawl jobs and their pages in the admin: state, progress and the last error at a glance.

A job's page shows counts of its pages by state and the first pages, not every one (a job may
hold 100,000). Actions go through crawl.jobs and crawl.tasks and say what they did.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from crawl.jobs import crawl_job_cancel, crawl_job_create
from crawl.models import CrawlJob, CrawlPage
from crawl.tasks import crawl_job_enqueue
from documents.admin import SourceAdmin
from documents.models import Source
from documents.services import IngestError
from ragsite.admin import (
    SAMPLE_ROWS,
    CountedDeletionAdmin,
    NarrowedFilter,
    ago,
    badge,
    change_link,
    changelist_url,
    clipped,
    counted,
    joined,
    sample_table,
    with_sub,
)

COUNTERS = [
    "discovered_count",
    "fetched_count",
    "ingested_count",
    "unchanged_count",
    "failed_count",
    "gone_count",
    "skipped_count",
]
SETTINGS = [
    "max_pages",
    "max_depth",
    "include_patterns",
    "exclude_patterns",
    "allowed_hosts",
    "path_prefix_only",
    "use_sitemap",
    "delete_missing",
]
JOB_TONES = {
    CrawlJob.Status.QUEUED: "quiet",
    CrawlJob.Status.RUNNING: "busy",
    CrawlJob.Status.SUCCEEDED: "ok",
    CrawlJob.Status.FAILED: "bad",
    CrawlJob.Status.CANCELLED: "warn",
}
PAGE_TONES = {
    CrawlPage.Status.QUEUED: "quiet",
    CrawlPage.Status.FETCHED: "busy",
    CrawlPage.Status.INGESTED: "ok",
    CrawlPage.Status.UNCHANGED: "ok",
    CrawlPage.Status.SKIPPED: "quiet",
    CrawlPage.Status.GONE: "warn",
    CrawlPage.Status.FAILED: "bad",
}
ACTIVE = (CrawlJob.Status.QUEUED, CrawlJob.Status.RUNNING)


def job_badge(job: CrawlJob) -> str:
    """The job's state; a running job also says when it is stopping or its worker went silent."""
    if job.status == CrawlJob.Status.RUNNING:
        if job.cancel_requested:
            return badge("stopping", "warn")
        stale = timezone.now() - timedelta(seconds=float(settings.CRAWL_STALE_SECONDS))
        if job.heartbeat_at is None or job.heartbeat_at < stale:
            # Resumed by the next worker that starts (crawl.tasks.crawl_jobs_recover).
            return badge("stalled", "warn")
    return badge(job.get_status_display().lower(), JOB_TONES[job.status])


def page_badge(page: CrawlPage) -> str:
    return badge(page.get_status_display().lower(), PAGE_TONES[page.status])


def started_message(started: list[int], running: int, problems: list[str] = ()) -> str:
    """ "Started 2 crawl jobs (7, 8); 1 already running." """
    parts = [
        f"Started {counted(len(started), 'crawl job')}" + (f" ({', '.join(map(str, started))})" if started else "")
    ]
    if running:
        parts.append(f"{running} already running")
    parts.extend(problems)
    return "; ".join(parts) + "."


def crawl_start(source: Source, busy: set[int], **options) -> CrawlJob | None:
    """A new queued job for ``source`` through crawl.jobs, or None when one is queued or running.

    ``busy`` holds the ids of sources with an active job (updated here): two crawls of one
    source at once would fetch every page twice.
    """
    if source.pk in busy:
        return None
    with transaction.atomic():
        job = crawl_job_create(source=source, **options)
        crawl_job_enqueue(job=job)
    busy.add(source.pk)
    return job


def busy_sources(source_ids) -> set[int]:
    return set(CrawlJob.objects.filter(source_id__in=source_ids, status__in=ACTIVE).values_list("source_id", flat=True))


class CrawlJobForm(forms.ModelForm):
    """The "add crawl job" form: validated and created by crawl_job_create, then queued."""

    include = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One pattern per line: glob (*/docs/*, /guide/*) or regex (re:^https://…).",
    )
    exclude = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Same syntax.")
    hosts = forms.CharField(
        required=False,
        label="Allowed hosts",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Extra hosts (one per line); the start URL's host is always allowed.",
    )

    class Meta:
        model = CrawlJob
        fields = ["start_url", "source", "max_pages", "max_depth", "path_prefix_only", "use_sitemap", "delete_missing"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["source"].required = False
        self.fields["source"].help_text = "Leave empty to use (or create) a source named after the site."
        self.fields["start_url"] = forms.CharField(max_length=2000, label="Start URL")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        lines = lambda name: [line.strip() for line in (cleaned.get(name) or "").splitlines() if line.strip()]  # noqa: E731
        try:
            self.job = crawl_job_create(
                start_url=cleaned["start_url"],
                source=cleaned.get("source"),
                max_pages=cleaned["max_pages"],
                max_depth=cleaned["max_depth"],
                include=lines("include"),
                exclude=lines("exclude"),
                allowed_hosts=lines("hosts"),
                path_prefix_only=cleaned.get("path_prefix_only", False),
                use_sitemap=cleaned.get("use_sitemap", True),
                delete_missing=cleaned.get("delete_missing", False),
            )
        except IngestError as exc:
            field = {"include": "include", "exclude": "exclude", "allowed_hosts": "hosts"}.get(exc.field, exc.field)
            self.add_error(field if field in self.fields else None, exc.message)
        return cleaned


@admin.register(CrawlJob)
class CrawlJobAdmin(CountedDeletionAdmin):
    list_display = ["crawl_wide", "state", "pages", "error_clip", "requested"]
    list_display_links = ["crawl_wide"]
    list_filter = ["status", "source"]
    list_select_related = ["source"]
    search_fields = ["start_url", "source__name"]
    actions = ["run_again", "cancel", "delete_selected"]
    VIEW_FIELDS = ["state", "page_counts", "page_sample"]

    def get_queryset(self, request):
        queued = Count("pages", filter=Q(pages__status=CrawlPage.Status.QUEUED))
        return super().get_queryset(request).annotate(_queued=queued)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = CrawlJobForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [
                (
                    None,
                    {
                        "fields": [
                            "start_url",
                            "source",
                            "max_pages",
                            "max_depth",
                            "include",
                            "exclude",
                            "hosts",
                            "path_prefix_only",
                            "use_sitemap",
                            "delete_missing",
                        ]
                    },
                )
            ]
        return [
            (None, {"fields": ["start_url", "source", "state", "error"]}),
            ("Progress", {"fields": ["page_counts", *COUNTERS]}),
            ("First pages", {"fields": ["page_sample"], "classes": ["collapse"]}),
            ("Settings", {"fields": SETTINGS, "classes": ["collapse"]}),
            (
                "Worker",
                {
                    "fields": [
                        "status",
                        "cancel_requested",
                        "worker_id",
                        "heartbeat_at",
                        "requested_at",
                        "seeded_at",
                        "started_at",
                        "finished_at",
                    ],
                    "classes": ["collapse"],
                },
            ),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [f.name for f in CrawlJob._meta.fields] + self.VIEW_FIELDS

    def save_model(self, request, obj, form, change):
        if change:
            return
        job = form.job
        obj.pk = job.pk
        obj.__dict__.update({k: v for k, v in job.__dict__.items() if not k.startswith("_")})
        crawl_job_enqueue(job=job)
        messages.success(request, f"Crawl job {job.pk} queued; its counters update live on this page.")

    def save_related(self, request, form, formsets, change):
        return

    def has_change_permission(self, request, obj=None):
        # Jobs are immutable once created; the page is for watching them. Viewing stays allowed.
        return obj is None and super().has_change_permission(request, obj)

    # --- list columns ---------------------------------------------------------------------------

    @admin.display(description="crawl", ordering="start_url")
    def crawl_wide(self, obj):
        return with_sub(clipped(obj.start_url), f"#{obj.pk} · {obj.source.name}")

    @admin.display(description="state", ordering="status")
    def state(self, obj):
        return job_badge(obj)

    @admin.display(description="pages", ordering="fetched_count")
    def pages(self, obj):
        return with_sub(f"{obj.fetched_count:,} fetched", f"{obj._queued:,} queued · {obj.failed_count:,} failed")

    @admin.display(description="last error")
    def error_clip(self, obj):
        return clipped(obj.error) if obj.error else ""

    @admin.display(description="requested", ordering="requested_at")
    def requested(self, obj):
        return ago(obj.requested_at)

    # --- the job's page (a few queries whatever the number of pages) -----------------------------

    @admin.display(description="pages")
    def page_counts(self, obj):
        counts = dict(obj.pages.order_by().values_list("status").annotate(n=Count("id")))
        total = sum(counts.values())
        items = format_html_join(
            "",
            '<li>{} <a href="{}">{}</a></li>',
            (
                (
                    badge(label.lower(), PAGE_TONES[status]),
                    changelist_url(CrawlPage, job=obj.pk, status__exact=status),
                    f"{counts[status]:,}",
                )
                for status, label in CrawlPage.Status.choices
                if counts.get(status)
            ),
        )
        everything = format_html(
            '<li><a href="{}">{}</a></li>', changelist_url(CrawlPage, job=obj.pk), counted(total, "page")
        )
        return format_html('<ul class="rs-counts">{}{}</ul>', everything, items)

    @admin.display(description="pages")
    def page_sample(self, obj):
        pages = obj.pages.order_by("depth", "id").only(
            "id", "job_id", "url", "depth", "status", "http_status", "error"
        )[:SAMPLE_ROWS]
        rows = [
            [change_link(page, page.url), page.depth, page_badge(page), page.http_status or "", clipped(page.error)]
            for page in pages
        ]
        return sample_table(
            [("URL", ""), ("depth", "4rem"), ("state", "6.5rem"), ("HTTP", "3.5rem"), ("error", "30%")],
            rows,
            total=obj.pages.count(),
            more_url=changelist_url(CrawlPage, job=obj.pk),
            noun="pages",
        )

    # --- actions --------------------------------------------------------------------------------

    @admin.action(description="Run selected crawl jobs again")
    def run_again(self, request, queryset):
        jobs = list(queryset.select_related("source").order_by("pk"))
        busy = busy_sources({job.source_id for job in jobs})
        started, running, problems = [], 0, []
        for job in jobs:
            try:
                new = crawl_start(
                    job.source,
                    busy,
                    start_url=job.start_url,
                    include=job.include_patterns,
                    exclude=job.exclude_patterns,
                    allowed_hosts=job.allowed_hosts,
                    max_pages=job.max_pages,
                    max_depth=job.max_depth,
                    path_prefix_only=job.path_prefix_only,
                    use_sitemap=job.use_sitemap,
                    delete_missing=job.delete_missing,
                )
            except IngestError as exc:
                problems.append(f"job {job.pk}: {exc.message}")
                continue
            if new is None:
                running += 1
            else:
                started.append(new.pk)
        level = messages.SUCCESS if started or not problems else messages.ERROR
        self.message_user(request, started_message(started, running, problems), level)

    @admin.action(description="Cancel selected crawl jobs")
    def cancel(self, request, queryset):
        outcome = Counter()
        for job in queryset.order_by("pk"):
            if job.is_finished:
                outcome["finished"] += 1
                continue
            was_queued = job.status == CrawlJob.Status.QUEUED
            job = crawl_job_cancel(job=job)
            if job.status == CrawlJob.Status.CANCELLED and was_queued:
                outcome["cancelled"] += 1
            elif job.status == CrawlJob.Status.RUNNING:
                outcome["stopping"] += 1
            else:
                outcome["finished"] += 1  # it ended meanwhile
        parts = []
        if outcome["cancelled"]:
            parts.append(f"Cancelled {counted(outcome['cancelled'], 'queued crawl job')}")
        if outcome["stopping"]:
            parts.append(f"asked {counted(outcome['stopping'], 'running job')} to stop after its current page")
        if outcome["finished"]:
            parts.append(f"{counted(outcome['finished'], 'job')} had already finished")
        message = "; ".join(parts) or "No crawl jobs selected"
        self.message_user(request, message[0].upper() + message[1:] + ".", messages.SUCCESS)

    def deleted_with(self, queryset):
        return {CrawlPage: CrawlPage.objects.filter(job__in=queryset.values("pk")).count()}

    # A queued or running job is cancelled before it is deleted: its worker would go on writing
    # the pages of a job that no longer exists.

    def deletion_refused(self, queryset):
        active = list(queryset.filter(status__in=ACTIVE).order_by("pk").values_list("pk", flat=True))
        if not active:
            return ""
        return f"Nothing deleted: cancel crawl jobs {', '.join(map(str, active))} first (queued or running)."

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.status in ACTIVE:
            return False
        return super().has_delete_permission(request, obj)


class JobFilter(NarrowedFilter):
    title = "crawl job"
    parameter_name = "job"
    parent = CrawlJob
    lookup = "job_id"


@admin.register(CrawlPage)
class CrawlPageAdmin(admin.ModelAdmin):
    list_display = ["url_wide", "job_link", "depth", "state", "error_clip", "fetched"]
    list_display_links = ["url_wide"]
    list_filter = [JobFilter, "status"]
    ordering = ["-id"]  # the latest discovered first
    search_fields = ["url", "error"]
    readonly_fields = [f.name for f in CrawlPage._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description="URL", ordering="url")
    def url_wide(self, obj):
        return clipped(obj.url)

    @admin.display(description="job", ordering="job_id")
    def job_link(self, obj):
        return format_html(
            '<a href="{}">#{}</a>', reverse("admin:crawl_crawljob_change", args=[obj.job_id]), obj.job_id
        )

    @admin.display(description="state", ordering="status")
    def state(self, obj):
        return with_sub(page_badge(obj), f"HTTP {obj.http_status}" if obj.http_status else "")

    @admin.display(description="error")
    def error_clip(self, obj):
        return clipped(obj.error) if obj.error else ""

    @admin.display(description="fetched", ordering="fetched_at")
    def fetched(self, obj):
        return ago(obj.fetched_at)


class CrawlingSourceAdmin(SourceAdmin):
    actions = ["crawl", *SourceAdmin.actions]

    @admin.action(description="Crawl selected sources (from their base URL)")
    def crawl(self, request, queryset):
        sources = list(queryset.order_by("pk"))
        busy = busy_sources([source.pk for source in sources])
        started, running, problems = [], 0, []
        without_url = [source.name for source in sources if not source.base_url]
        for source in sources:
            if not source.base_url:
                continue
            try:
                job = crawl_start(source, busy, start_url=source.base_url)
            except IngestError as exc:
                problems.append(f"{source.name}: {exc.message}")
                continue
            if job is None:
                running += 1
            else:
                started.append(job.pk)
        if without_url:
            problems.append(f"no base URL to crawl for {joined(without_url)}")
        level = messages.SUCCESS if started or not problems else messages.WARNING
        self.message_user(request, started_message(started, running, problems), level)

    def deleted_with(self, queryset):
        jobs = CrawlJob.objects.filter(source__in=queryset.values("pk"))
        return {
            **super().deleted_with(queryset),
            CrawlJob: jobs.count(),
            CrawlPage: CrawlPage.objects.filter(job__in=jobs).count(),
        }


# crawl knows documents, not the other way round: it adds its action to the Source admin here.
admin.site.unregister(Source)
admin.site.register(Source, CrawlingSourceAdmin)
