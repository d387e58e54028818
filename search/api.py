"""GET /api/search/: the search contract of DESIGN.md, over search.selectors.chunk_search."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from documents.models import Source
from ragsite.api import ApiError
from search.filters import SearchFilters
from search.selectors import MODES, SearchUnavailable, chunk_search


class SearchParams(serializers.Serializer):
    q = serializers.CharField(trim_whitespace=True, help_text="The query: words, \"quoted phrases\", -exclusions.")
    mode = serializers.ChoiceField(choices=MODES, required=False)
    limit = serializers.IntegerField(required=False, default=10, min_value=1)
    offset = serializers.IntegerField(required=False, default=0, min_value=0)
    source = serializers.CharField(required=False, help_text="Source id or name; several separated by commas.")
    document = serializers.CharField(required=False, help_text="Document id; several separated by commas.")
    metadata = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="key:value on document metadata; repeatable."
    )

    def validate_q(self, value):
        if not value.strip():
            raise serializers.ValidationError("The query is empty.")
        if len(value) > settings.SEARCH_MAX_QUERY_CHARS:
            raise serializers.ValidationError(f"The query is longer than {settings.SEARCH_MAX_QUERY_CHARS} characters.")
        return value

    def validate_limit(self, value):
        if value > settings.SEARCH_MAX_LIMIT:
            raise serializers.ValidationError(f"limit is at most {settings.SEARCH_MAX_LIMIT}.")
        return value

    def validate_offset(self, value):
        if value > settings.SEARCH_MAX_OFFSET:
            raise serializers.ValidationError(f"offset is at most {settings.SEARCH_MAX_OFFSET}.")
        return value

    def validate_document(self, value):
        try:
            ids = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise serializers.ValidationError("document takes numeric ids separated by commas.") from None
        if not ids or any(i <= 0 for i in ids):
            raise serializers.ValidationError("document takes positive ids.")
        return ids

    def validate_source(self, value):
        ids: list[int] = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            source = Source.objects.filter(pk=int(part)).first() if part.isdigit() else None
            source = source or Source.objects.filter(name=part).first()
            if source is None:
                raise serializers.ValidationError(f"No source with id or name {part!r}.")
            ids.append(source.pk)
        if not ids:
            raise serializers.ValidationError("source is empty.")
        return ids

    def validate_metadata(self, value):
        pairs: dict[str, str] = {}
        for item in value:
            key, sep, val = item.partition(":")
            if not sep or not key.strip() or len(key) > 100:
                raise serializers.ValidationError(f"{item!r} is not key:value.")
            pairs[key.strip()] = val.strip()
        return pairs


def search_params(query_params) -> dict:
    data = {k: v for k, v in query_params.items() if k != "metadata"}
    if "metadata" in query_params:
        data["metadata"] = query_params.getlist("metadata")
    params = SearchParams(data=data)
    params.is_valid(raise_exception=True)
    return params.validated_data


def search_filters(validated: dict) -> SearchFilters:
    return SearchFilters(
        source_ids=validated.get("source"),
        document_ids=validated.get("document"),
        metadata=validated.get("metadata") or None,
    )


class SearchResultSerializer(serializers.Serializer):
    chunk_id = serializers.UUIDField()
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    url = serializers.CharField()
    source = serializers.CharField()
    snippet = serializers.CharField(help_text="HTML-escaped text; matched terms wrapped in <mark>.")
    score = serializers.FloatField()
    rank = serializers.IntegerField()
    heading_path = serializers.ListField(child=serializers.CharField())
    metadata = serializers.DictField()


class SearchResponseSerializer(serializers.Serializer):
    query = serializers.CharField()
    mode = serializers.ChoiceField(choices=MODES)
    count = serializers.IntegerField(help_text="Results available within the candidate depth (after grouping).")
    results = SearchResultSerializer(many=True)
    took_ms = serializers.FloatField()
    warnings = serializers.ListField(child=serializers.CharField(), required=False)


def search_response_body(response) -> dict:
    body = {
        "query": response.query,
        "mode": response.mode,
        "count": response.count,
        "results": [
            {
                "chunk_id": r.chunk_id,
                "document_id": r.document_id,
                "title": r.title,
                "url": r.url,
                "source": r.source,
                "snippet": r.snippet,
                "score": r.score,
                "rank": r.rank,
                "heading_path": r.heading_path,
                "metadata": r.metadata,
            }
            for r in response.results
        ],
        "took_ms": response.took_ms,
    }
    if response.warnings:
        body["warnings"] = response.warnings
    return body


class SearchView(APIView):
    @extend_schema(
        summary="Search chunks",
        parameters=[SearchParams],
        responses={200: SearchResponseSerializer},
        examples=[
            OpenApiExample(
                "Hybrid",
                value={
                    "query": "how is green tea made",
                    "mode": "hybrid",
                    "count": 1,
                    "results": [
                        {
                            "chunk_id": "6f1c9f0e-3b7a-4c1e-9d0e-2a1b3c4d5e6f",
                            "document_id": 7,
                            "title": "Tea",
                            "url": "https://example.com/tea",
                            "source": "notes",
                            "snippet": "<mark>Green</mark> <mark>tea</mark> is steamed",
                            "score": 0.0325,
                            "rank": 1,
                            "heading_path": [],
                            "metadata": {},
                        }
                    ],
                    "took_ms": 21.4,
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        params = search_params(request.query_params)
        try:
            response = chunk_search(
                params["q"],
                mode=params.get("mode"),
                limit=params["limit"],
                offset=params["offset"],
                filters=search_filters(params),
            )
        except SearchUnavailable as exc:
            raise ApiError(str(exc), code="semantic_unavailable", status_code=503) from exc
        from rest_framework.response import Response

        return Response(search_response_body(response))
