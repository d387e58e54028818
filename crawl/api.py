"""REST API for crawl jobs: create (and queue), list, retrieve, cancel, and the job's pages."""

from __future__ import annotations

import django_filters
from django.db import transaction
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from crawl.models import CrawlJob, CrawlPage
from crawl.services import CrawlJobError, crawl_job_cancel, crawl_job_create, crawl_job_enqueue
from ragsite.api import ApiError


class CrawlJobSerializer(serializers.ModelSerializer):
    source = serializers.CharField(source="source.name", read_only=True)
    source_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = CrawlJob
        fields = [
            "id", "source", "source_id", "start_url", "status", "max_pages", "max_depth",
            "include_patterns", "exclude_patterns", "allowed_hosts", "path_prefix_only", "use_sitemap",
            "delete_missing", "discovered_count", "fetched_count", "ingested_count", "unchanged_count",
            "failed_count", "gone_count", "skipped_count", "cancel_requested", "error", "requested_at",
            "started_at", "finished_at",
        ]
        read_only_fields = fields


class CrawlJobCreateSerializer(serializers.Serializer):
    start_url = serializers.CharField(max_length=2000)
    source = serializers.CharField(required=False, max_length=200, help_text="Source name (default: the start URL's host).")
    max_pages = serializers.IntegerField(required=False, default=100)
    max_depth = serializers.IntegerField(required=False, default=3)
    include = serializers.ListField(child=serializers.CharField(max_length=500), required=False, default=list,
                                    help_text="URL patterns to keep: glob (`*/docs/*`) or regex (`re:^https://...`).")
    exclude = serializers.ListField(child=serializers.CharField(max_length=500), required=False, default=list)
    allowed_hosts = serializers.ListField(child=serializers.CharField(max_length=255), required=False, default=list)
    path_prefix_only = serializers.BooleanField(required=False, default=False)
    use_sitemap = serializers.BooleanField(required=False, default=True)
    delete_missing = serializers.BooleanField(required=False, default=False)


class CrawlPageSerializer(serializers.ModelSerializer):
    class Meta:
        model = CrawlPage
        fields = ["id", "url", "depth", "status", "http_status", "document", "error", "fetched_at"]
        read_only_fields = fields


class CrawlJobFilter(django_filters.FilterSet):
    source = django_filters.CharFilter(field_name="source__name")

    class Meta:
        model = CrawlJob
        fields = ["status", "source"]


@extend_schema_view(
    list=extend_schema(summary="List crawl jobs with their live counters"),
    retrieve=extend_schema(summary="Get a crawl job"),
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
        request=CrawlJobCreateSerializer,
        responses={201: CrawlJobSerializer},
        examples=[OpenApiExample("Docs site", value={"start_url": "https://docs.example.com/", "max_pages": 200,
                                                     "max_depth": 4, "exclude": ["*/changelog/*"]}, request_only=True)],
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
        except CrawlJobError as exc:
            raise ApiError(exc.message, field=exc.field, code=exc.code) from exc
        return Response(CrawlJobSerializer(self.get_queryset().get(pk=job.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Cancel a crawl job (a running one stops between pages)", request=None,
                   responses={202: CrawlJobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = crawl_job_cancel(job=self.get_object())
        return Response(CrawlJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="The job's pages with their status and errors", responses=CrawlPageSerializer(many=True))
    @action(detail=True, methods=["get"])
    def pages(self, request, pk=None):
        job = self.get_object()
        queryset = CrawlPage.objects.filter(job=job).order_by("depth", "id")
        page_status = request.query_params.get("status")
        if page_status:
            queryset = queryset.filter(status=page_status)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(CrawlPageSerializer(page, many=True).data)
