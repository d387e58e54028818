"""Conversations in the admin: who asked what, what was searched, and what was answered."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count

from ragsite.admin import CountedDeletionAdmin, ago, clipped
from search.models import Conversation, Turn


class TurnInline(admin.StackedInline):
    model = Turn
    extra = 0
    can_delete = False
    fields = [
        "position",
        "question",
        "searched_for",
        "rewritten_by",
        "status",
        "answer",
        "mode",
        "provider",
        "model",
        "timings",
    ]
    readonly_fields = fields
    ordering = ["position"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(CountedDeletionAdmin):
    list_display = ["title_wide", "owner_clip", "turn_count", "updated"]
    list_display_links = ["title_wide"]
    list_filter = ["updated_at"]
    search_fields = ["title", "owner", "turns__question"]
    readonly_fields = ["id", "owner", "title", "created_at", "updated_at"]
    inlines = [TurnInline]
    list_per_page = 50

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(turn_count=Count("turns"))

    @admin.display(description="title", ordering="title")
    def title_wide(self, obj):
        return clipped(str(obj))

    @admin.display(description="owner", ordering="owner")
    def owner_clip(self, obj):
        return clipped(obj.owner)

    @admin.display(ordering="turn_count", description="turns")
    def turn_count(self, obj):
        return obj.turn_count

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj):
        return ago(obj.updated_at)

    def deleted_with(self, queryset):
        return {Turn: Turn.objects.filter(conversation__in=queryset.values("pk")).count()}

    def has_add_permission(self, request):
        return False
