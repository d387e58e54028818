"""Conversations in the admin: who asked what, what was searched, and what was answered.

A conversation's page shows its latest turns, not all of them (it has no limit), with a link to
the list of its turns; each turn has a read-only page of its own.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count

from ragsite.admin import (
    SAMPLE_ROWS,
    CountedDeletionAdmin,
    NarrowedFilter,
    ago,
    badge,
    change_link,
    changelist_url,
    clipped,
    sample_table,
    with_sub,
)
from search.models import Conversation, Turn


def turn_badge(turn: Turn) -> str:
    if turn.status == Turn.Status.ANSWERED:
        return badge("answered", "ok")
    return badge("nothing found", "warn")


@admin.register(Conversation)
class ConversationAdmin(CountedDeletionAdmin):
    list_display = ["title_wide", "owner_clip", "turn_count", "updated"]
    list_display_links = ["title_wide"]
    list_filter = ["updated_at"]
    search_fields = ["title", "owner", "turns__question"]
    readonly_fields = ["id", "owner", "title", "created_at", "updated_at", "latest_turns"]
    fields = ["title", "owner", "id", "created_at", "updated_at", "latest_turns"]
    list_per_page = 50

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(turn_count=Count("turns"))

    def has_add_permission(self, request):
        return False

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

    @admin.display(description="turns")
    def latest_turns(self, obj):
        """The latest turns, oldest first (as they were asked); each links to its whole answer."""
        turns = reversed(obj.turns.order_by("-position")[:SAMPLE_ROWS])
        rows = [
            [
                change_link(turn, str(turn.position)),
                clipped(turn.question),
                clipped(turn.searched_for),
                turn_badge(turn),
            ]
            for turn in turns
        ]
        return sample_table(
            [("#", "3rem"), ("question", ""), ("searched for", "35%"), ("answer", "8rem")],
            rows,
            total=obj.turn_count,
            more_url=changelist_url(Turn, conversation=obj.pk),
            noun="turns",
            latest=True,
        )

    def deleted_with(self, queryset):
        return {Turn: Turn.objects.filter(conversation__in=queryset.values("pk")).count()}


class ConversationFilter(NarrowedFilter):
    title = "conversation"
    parameter_name = "conversation"
    parent = Conversation
    lookup = "conversation_id"


@admin.register(Turn)
class TurnAdmin(admin.ModelAdmin):
    """Read-only: a turn is a record of what was asked and answered; it leaves with its conversation."""

    list_display = ["position", "question_wide", "state", "mode", "asked"]
    list_display_links = ["question_wide"]
    list_filter = [ConversationFilter, "status", "mode"]
    search_fields = ["question", "searched_for"]
    ordering = ["-created_at", "-position"]
    fields = [
        "conversation",
        "position",
        "question",
        "searched_for",
        "rewritten_by",
        "status",
        "answer",
        "citations",
        "mode",
        "provider",
        "model",
        "timings",
        "created_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="question", ordering="question")
    def question_wide(self, obj):
        return with_sub(clipped(obj.question), f"searched for: {obj.searched_for}")

    @admin.display(description="answer", ordering="status")
    def state(self, obj):
        return turn_badge(obj)

    @admin.display(description="asked", ordering="created_at")
    def asked(self, obj):
        return ago(obj.created_at)
