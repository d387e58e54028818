"""Conversations in the admin: who asked what, what was searched, and what was answered."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count

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
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "turn_count", "updated_at"]
    list_filter = ["updated_at"]
    search_fields = ["title", "owner", "turns__question"]
    readonly_fields = ["id", "owner", "title", "created_at", "updated_at"]
    inlines = [TurnInline]
    list_per_page = 50

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(turn_count=Count("turns"))

    @admin.display(ordering="turn_count", description="turns")
    def turn_count(self, obj):
        return obj.turn_count

    def has_add_permission(self, request):
        return False
