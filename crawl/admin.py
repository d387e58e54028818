from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction

from crawl.jobs import crawl_job_cancel, crawl_job_create
from crawl.models import CrawlJob, CrawlPage
from crawl.tasks import crawl_job_enqueue
from documents.admin import SourceAdmin
from documents.models import Source
from documents.services import IngestError

COUNTERS = [
    "discovered_count",
    "fetched_count",
    "ingested_count",
    "unchanged_count",
    "failed_count",
    "gone_count",
    "skipped_count",
]


class CrawlPageInline(admin.TabularInline):
    model = CrawlPage
    fields = ["url", "depth", "status", "http_status", "document", "error", "fetched_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    max_num = 0

    def has_add_permission(self, request, obj=None):
        return False


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
class CrawlJobAdmin(admin.ModelAdmin):
    list_display = ["id", "start_url", "source", "status", *COUNTERS, "requested_at", "finished_at"]
    list_filter = ["status", "source"]
    list_select_related = ["source"]
    search_fields = ["start_url", "source__name"]
    readonly_fields = [
        "status",
        *COUNTERS,
        "cancel_requested",
        "error",
        "worker_id",
        "heartbeat_at",
        "requested_at",
        "started_at",
        "finished_at",
        "seeded_at",
    ]
    inlines = [CrawlPageInline]
    actions = ["cancel"]

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
        return super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [f.name for f in CrawlJob._meta.fields]

    def get_inlines(self, request, obj):
        return [] if obj is None else self.inlines

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

    @admin.action(description="Cancel selected crawl jobs")
    def cancel(self, request, queryset):
        jobs = [crawl_job_cancel(job=job) for job in queryset.exclude(status__in=CrawlJob.FINISHED)]
        self.message_user(request, f"Cancellation requested for {len(jobs)} jobs.", messages.SUCCESS)


@admin.register(CrawlPage)
class CrawlPageAdmin(admin.ModelAdmin):
    list_display = ["url", "job", "depth", "status", "http_status", "fetched_at"]
    list_filter = ["status"]
    list_select_related = ["job"]
    search_fields = ["url", "error"]
    readonly_fields = [f.name for f in CrawlPage._meta.fields]

    def has_add_permission(self, request):
        return False


class CrawlingSourceAdmin(SourceAdmin):
    actions = ["crawl"]

    @admin.action(description="Crawl selected sources (from their base URL)")
    def crawl(self, request, queryset):
        queued, skipped = [], []
        for source in queryset:
            if not source.base_url:
                skipped.append(source.name)
                continue
            try:
                with transaction.atomic():
                    job = crawl_job_create(start_url=source.base_url, source=source)
                    crawl_job_enqueue(job=job)
                queued.append(job.pk)
            except IngestError as exc:
                self.message_user(request, f"{source.name}: {exc.message}", messages.ERROR)
        if queued:
            self.message_user(request, f"Queued crawl jobs {', '.join(map(str, queued))}.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"No base URL to crawl for: {', '.join(skipped)}.", messages.WARNING)


# crawl knows documents, not the other way round: it adds its action to the Source admin here.
admin.site.unregister(Source)
admin.site.register(Source, CrawlingSourceAdmin)
