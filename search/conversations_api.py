"""GET/DELETE /api/conversations/: a caller's own conversations, each with its turns."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
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

    @extend_schema(summary="Your conversations, latest first", responses={200: ConversationSerializer(many=True)})
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

    @extend_schema(summary="One of your conversations with its turns", responses={200: ConversationDetailSerializer})
    def get(self, request, conversation_id):
        return Response(ConversationDetailSerializer(_owned(request, conversation_id)).data)

    @extend_schema(summary="Delete one of your conversations", responses={204: None})
    def delete(self, request, conversation_id):
        conversation_delete(conversation=_owned(request, conversation_id))
        return Response(status=204)
