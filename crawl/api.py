"""REST API for crawl jobs: create (and queue), list, retrieve, cancel, and the job's pages."""

from __future__ import annotations

import django_filters
from django.db import transaction
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from crawl.jobs import (
    MAX_DEPTH_LIMIT,
    MAX_PAGES_LIMIT,
    MAX_PATTERNS,
    crawl_job_cancel,
    crawl_job_create,
)
from crawl.models import CrawlJob, CrawlPage
from crawl.scope import MAX_PATTERN_CHARS
from crawl.tasks import crawl_job_enqueue
from documents.selectors import source_by_id_or_name
from documents.services import IngestError
from ragsite.api import ApiError


class CrawlJobSerializer(serializers.ModelSerializer):
    source = serializers.CharField(source="source.name", read_only=True)
    source_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = CrawlJob
        fields = [
            "id",
            "source",
            "source_id",
            "start_url",
            "status",
            "max_pages",
            "max_depth",
            "include_patterns",
            "exclude_patterns",
            "allowed_hosts",
            "path_prefix_only",
            "use_sitemap",
            "delete_missing",
            "discovered_count",
            "fetched_count",
            "ingested_count",
            "unchanged_count",
            "failed_count",
            "gone_count",
            "skipped_count",
            "cancel_requested",
            "error",
            "requested_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class CrawlJobCreateSerializer(serializers.Serializer):
    start_url = serializers.CharField(max_length=2000)
    source = serializers.CharField(
        required=False, max_length=200, help_text="Source name (default: the start URL's host)."
    )
    max_pages = serializers.IntegerField(
        required=False,
        default=100,
        min_value=1,
        max_value=MAX_PAGES_LIMIT,
        help_text="Stop after fetching this many pages.",
    )
    max_depth = serializers.IntegerField(
        required=False,
        default=3,
        min_value=0,
        max_value=MAX_DEPTH_LIMIT,
        help_text="Links followed from the start URL.",
    )
    # Every discovered link is matched against every pattern: their number is bounded like their length.
    include = serializers.ListField(
        child=serializers.CharField(max_length=MAX_PATTERN_CHARS),
        required=False,
        default=list,
        max_length=MAX_PATTERNS,
        help_text="URL patterns to keep: glob (`*/docs/*`) or regex in RE2 syntax "
        "(`re:^https://...`; no backreferences or lookaround).",
    )
    exclude = serializers.ListField(
        child=serializers.CharField(max_length=MAX_PATTERN_CHARS),
        required=False,
        default=list,
        max_length=MAX_PATTERNS,
        help_text="URL patterns to skip, same syntax as `include`.",
    )
    allowed_hosts = serializers.ListField(
        child=serializers.CharField(max_length=255),
        required=False,
        default=list,
        max_length=MAX_PATTERNS,
        help_text="Hosts besides the start URL's that the crawl may follow.",
    )
    path_prefix_only = serializers.BooleanField(required=False, default=False)
    use_sitemap = serializers.BooleanField(required=False, default=True)
    delete_missing = serializers.BooleanField(required=False, default=False)


class CrawlPageSerializer(serializers.ModelSerializer):
    class Meta:
        model = CrawlPage
        fields = ["id", "url", "depth", "status", "http_status", "document", "error", "fetched_at"]
        read_only_fields = fields


class CrawlJobFilter(django_filters.FilterSet):
    source = django_filters.CharFilter(method="filter_source", help_text="Source id or name.")
    status = django_filters.ChoiceFilter(choices=CrawlJob.Status.choices, help_text="The job's state.")

    class Meta:
        model = CrawlJob
        fields = ["status", "source"]

    def filter_source(self, queryset, name, value):
        source = source_by_id_or_name(value)
        return queryset.filter(source=source) if source is not None else queryset.none()


CRAWL_JOB_EXAMPLE = {
    "id": 4,
    "source": "docs.example.com",
    "source_id": 5,
    "start_url": "https://docs.example.com/",
    "status": "running",
    "max_pages": 200,
    "max_depth": 4,
    "include_patterns": [],
    "exclude_patterns": ["*/changelog/*"],
    "allowed_hosts": [],
    "path_prefix_only": False,
    "use_sitemap": True,
    "delete_missing": False,
    "discovered_count": 57,
    "fetched_count": 31,
    "ingested_count": 28,
    "unchanged_count": 0,
    "failed_count": 1,
    "gone_count": 0,
    "skipped_count": 2,
    "cancel_requested": False,
    "error": "",
    "requested_at": "2025-05-01T09:30:00Z",
    "started_at": "2025-05-01T09:30:01Z",
    "finished_at": None,
}
CRAWL_PAGE_EXAMPLE = {
    "id": 88,
    "url": "https://docs.example.com/install/",
    "depth": 1,
    "status": "ingested",
    "http_status": 200,
    "document": 41,
    "error": "",
    "fetched_at": "2025-05-01T09:30:04Z",
}
CRAWL_JOB_EXAMPLES = [OpenApiExample("Crawl job", value=CRAWL_JOB_EXAMPLE, response_only=True)]


@extend_schema_view(
    list=extend_schema(
        summary="List crawl jobs with their live counters",
        description="Newest first; the counters move while a job runs. Filter by `status` or `source` (id or name).",
        examples=CRAWL_JOB_EXAMPLES,
    ),
    retrieve=extend_schema(
        summary="Get a crawl job",
        description="One job with its settings, counters and, when it failed, the error.",
        examples=CRAWL_JOB_EXAMPLES,
    ),
)
class CrawlJobViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    serializer_class = CrawlJobSerializer
    filterset_class = CrawlJobFilter
    ordering_fields = ["requested_at", "id", "status"]
    ordering = ["-requested_at", "-id"]

    def get_queryset(self):
        return CrawlJob.objects.select_related("source")

    @extend_schema(
        summary="Create and queue a crawl job",
        description=(
            "Checks the start URL (scheme, host, and that it resolves to a public address) and the patterns, "
            "stores the job and queues it for the worker. It runs politely: robots.txt, a per-host delay, "
            "its sitemap when `use_sitemap`."
        ),
        request=CrawlJobCreateSerializer,
        responses={201: CrawlJobSerializer},
        examples=[
            OpenApiExample(
                "Docs site",
                value={
                    "start_url": "https://docs.example.com/",
                    "max_pages": 200,
                    "max_depth": 4,
                    "exclude": ["*/changelog/*"],
                },
                request_only=True,
            ),
            OpenApiExample(
                "Queued",
                value={
                    **CRAWL_JOB_EXAMPLE,
                    "status": "queued",
                    "discovered_count": 0,
                    "fetched_count": 0,
                    "ingested_count": 0,
                    "failed_count": 0,
                    "skipped_count": 0,
                    "started_at": None,
                },
                response_only=True,
                status_codes=["201"],
            ),
        ],
    )
    def create(self, request, *args, **kwargs):
        params = CrawlJobCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        try:
            with transaction.atomic():
                job = crawl_job_create(
                    start_url=data["start_url"],
                    source=data.get("source"),
                    max_pages=data["max_pages"],
                    max_depth=data["max_depth"],
                    include=data["include"],
                    exclude=data["exclude"],
                    allowed_hosts=data["allowed_hosts"],
                    path_prefix_only=data["path_prefix_only"],
                    use_sitemap=data["use_sitemap"],
                    delete_missing=data["delete_missing"],
                )
                crawl_job_enqueue(job=job)
        except IngestError as exc:
            raise ApiError(exc.message, field=exc.field, code=exc.code) from exc
        return Response(CrawlJobSerializer(self.get_queryset().get(pk=job.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Cancel a crawl job (a running one stops between pages)",
        description="A queued job is cancelled at once; a running one is asked to stop and finishes its current "
        "page first. Cancelling a finished job changes nothing.",
        request=None,
        responses={202: CrawlJobSerializer},
        examples=[
            OpenApiExample(
                "Cancelling",
                value={**CRAWL_JOB_EXAMPLE, "cancel_requested": True},
                response_only=True,
                status_codes=["202"],
            )
        ],
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = crawl_job_cancel(job=self.get_object())
        return Response(CrawlJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="The job's pages with their status and errors",
        description="Every URL the job discovered, by depth, with its HTTP status, outcome and document.",
        parameters=[
            OpenApiParameter("status", str, enum=CrawlPage.Status.values, description="Only pages in this state.")
        ],
        responses=CrawlPageSerializer(many=True),
        examples=[OpenApiExample("Page", value=CRAWL_PAGE_EXAMPLE, response_only=True)],
    )
    # the job list's filters and ordering do not apply to pages: no filter backends here
    @action(detail=True, methods=["get"], filter_backends=[])
    def pages(self, request, pk=None):
        job = self.get_object()
        queryset = CrawlPage.objects.filter(job=job).order_by("depth", "id")
        page_status = request.query_params.get("status")
        if page_status:
            queryset = queryset.filter(status=page_status)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(CrawlPageSerializer(page, many=True).data)
