"""GET/DELETE /api/conversations/: a caller's own conversations, each with its turns."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from ragsite.api import ApiError
from search.conversations import (
    ConversationNotFound,
    conversation_delete,
    conversation_get,
    conversation_owner,
)
from search.models import Conversation, Turn

MAX_LISTED = 200

CONVERSATION_ID = OpenApiParameter(
    "conversation_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The conversation's id (from /api/ask/)."
)
TURN_EXAMPLE = {
    "position": 1,
    "question": "and what do they add in the hive?",
    "searched_for": "and what do they add in the hive? bees honey",
    "rewritten_by": "rule",
    "answer": "House bees add enzymes to the nectar [1].",
    "status": "answered",
    "citations": [
        {
            "n": 1,
            "chunk_id": "6f1c9f0e-3b7a-4c1e-9d0e-2a1b3c4d5e6f",
            "document_id": 7,
            "title": "How bees make honey",
            "url": "https://example.com/bees",
            "source": "handbook",
            "snippet": "House <mark>bees</mark> add enzymes",
            "heading_path": ["In the hive"],
            "cited": True,
        }
    ],
    "mode": "hybrid",
    "provider": "extractive",
    "model": "all-MiniLM-L6-v2",
    "timings": {"rewrite_ms": 0.1, "retrieve_ms": 41.5, "total_ms": 98.2},
    "created_at": "2026-12-06T08:00:00Z",
}


class OwnsConversations(permissions.BasePermission):
    """Whoever may ask may read and delete the conversations they started (a read key included)."""

    def has_permission(self, request, view):
        return settings.SEARCH_PUBLIC or bool(request.user and request.user.is_authenticated)


class TurnSerializer(serializers.ModelSerializer):
    class Meta:
        model = Turn
        fields = [
            "position",
            "question",
            "searched_for",
            "rewritten_by",
            "answer",
            "status",
            "citations",
            "mode",
            "provider",
            "model",
            "timings",
            "created_at",
        ]


class ConversationSerializer(serializers.ModelSerializer):
    turn_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "title", "created_at", "updated_at", "turn_count"]


class ConversationDetailSerializer(serializers.ModelSerializer):
    turns = TurnSerializer(many=True, read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "title", "created_at", "updated_at", "turns"]


def _owned(request, conversation_id) -> Conversation:
    try:
        return conversation_get(conversation_id=conversation_id, owner=conversation_owner(request))
    except ConversationNotFound as exc:
        raise ApiError(str(exc), code="not_found", status_code=404) from exc


class ConversationListView(APIView):
    permission_classes = [OwnsConversations]

    @extend_schema(
        summary="Your conversations, latest first",
        description="The conversations the caller (this API key, signed-in user or browser session) started "
        f"with /api/ask/, the {MAX_LISTED} most recent; kept CONVERSATION_RETENTION_DAYS after their last turn.",
        responses={200: ConversationSerializer(many=True)},
        examples=[
            OpenApiExample(
                "Conversations",
                # One item: the schema generator wraps list examples itself.
                value={
                    "id": "0b6f3e0e-8f5c-4c55-9d5e-3c1f2f7a9b10",
                    "title": "How do bees make honey?",
                    "created_at": "2026-12-06T08:00:00Z",
                    "updated_at": "2026-12-06T08:01:10Z",
                    "turn_count": 2,
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        from django.db.models import Count

        rows = (
            Conversation.objects.filter(owner=conversation_owner(request))
            .annotate(turn_count=Count("turns"))
            .order_by("-updated_at")[:MAX_LISTED]
        )
        return Response(ConversationSerializer(rows, many=True).data)


class ConversationDetailView(APIView):
    permission_classes = [OwnsConversations]

    @extend_schema(
        summary="One of your conversations with its turns",
        description="Every turn: the question, the standalone query searched for it, the answer with its "
        "citations, and timings. Someone else's conversation is a 404.",
        parameters=[CONVERSATION_ID],
        responses={200: ConversationDetailSerializer},
        examples=[
            OpenApiExample(
                "Conversation",
                value={
                    "id": "0b6f3e0e-8f5c-4c55-9d5e-3c1f2f7a9b10",
                    "title": "How do bees make honey?",
                    "created_at": "2026-12-06T08:00:00Z",
                    "updated_at": "2026-12-06T08:01:10Z",
                    "turns": [TURN_EXAMPLE],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request, conversation_id):
        return Response(ConversationDetailSerializer(_owned(request, conversation_id)).data)

    @extend_schema(
        summary="Delete one of your conversations",
        description="Deletes the conversation and its turns. Someone else's conversation is a 404.",
        parameters=[CONVERSATION_ID],
        responses={204: None},
    )
    def delete(self, request, conversation_id):
        conversation_delete(conversation=_owned(request, conversation_id))
        return Response(status=204)
