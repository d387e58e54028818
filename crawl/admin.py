from __future__ import annotations

from django.contrib import admin

from crawl.models import CrawlJob, CrawlPage


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


@admin.register(CrawlJob)
class CrawlJobAdmin(admin.ModelAdmin):
    list_display = [
        "id", "start_url", "source", "status", "discovered_count", "fetched_count",
        "ingested_count", "unchanged_count", "failed_count", "requested_at", "finished_at",
    ]
    list_filter = ["status", "source"]
    list_select_related = ["source"]
    search_fields = ["start_url", "source__name"]
    readonly_fields = [
        "status", "discovered_count", "fetched_count", "ingested_count", "unchanged_count",
        "failed_count", "cancel_requested", "error", "worker_id", "heartbeat_at",
        "requested_at", "started_at", "finished_at",
    ]
    inlines = [CrawlPageInline]


@admin.register(CrawlPage)
class CrawlPageAdmin(admin.ModelAdmin):
    list_display = ["url", "job", "depth", "status", "http_status", "fetched_at"]
    list_filter = ["status"]
    list_select_related = ["job"]
    search_fields = ["url", "error"]
    readonly_fields = [f.name for f in CrawlPage._meta.fields]

    def has_add_permission(self, request):
        return False
