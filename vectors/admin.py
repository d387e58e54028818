"""The embedding cache in the admin: which texts (by hash) have a stored vector, for which model."""

from __future__ import annotations

from django.contrib import admin

from ragsite.admin import ago, clipped
from vectors.models import EmbeddingCache


@admin.register(EmbeddingCache)
class EmbeddingCacheAdmin(admin.ModelAdmin):
    list_display = ["hash_wide", "model_clip", "dimension", "created"]
    list_display_links = ["hash_wide"]
    list_filter = ["model"]
    search_fields = ["content_hash"]
    readonly_fields = ["model", "content_hash", "dimension", "created_at"]
    exclude = ["vector"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("vector")  # 1.5 KB a row that no page shows

    def has_add_permission(self, request):
        return False

    @admin.display(description="content hash", ordering="content_hash")
    def hash_wide(self, obj):
        return clipped(obj.content_hash, css="rs-mono")

    @admin.display(description="model", ordering="model")
    def model_clip(self, obj):
        return clipped(obj.model)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return ago(obj.created_at)
