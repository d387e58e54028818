from __future__ import annotations

from django.contrib import admin

from vectors.models import EmbeddingCache


@admin.register(EmbeddingCache)
class EmbeddingCacheAdmin(admin.ModelAdmin):
    list_display = ["model", "content_hash", "dimension", "created_at"]
    list_filter = ["model"]
    search_fields = ["content_hash"]
    readonly_fields = ["model", "content_hash", "dimension", "created_at"]
    exclude = ["vector"]

    def has_add_permission(self, request):
        return False
