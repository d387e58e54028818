"""A document's original file and its indexing progress: two small reads beside the document API.

Both use the API's default permission (documents.auth.ReadOrWrite), the same as
``GET /api/documents/{id}/``: whoever may read the document may read its original.
"""

from __future__ import annotations

import logging

from django.db.models import Count, Q
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from documents.files import file_open
from documents.filestore import FileStoreUnavailable
from documents.models import Chunk, Document
from ragsite.api import ApiError, object_id
from ragsite.worker import worker_missing

logger = logging.getLogger(__name__)

# Types a browser shows without running anything of the file's: served inline (a PDF opens at
# #page=N). Everything else is a download, so an uploaded HTML or SVG file can never run
# script on this site's origin.
INLINE_TYPES = {"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"}
ERRORS_SHOWN = 3


def _document(pk: str, *fields: str) -> Document:
    document_id = object_id(pk)
    document = Document.objects.filter(pk=document_id).only("id", *fields).first() if document_id else None
    if document is None:
        raise NotFound("No document with this id.")
    return document


DOCUMENT_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The document's id.")


class DocumentFileView(APIView):
    error_statuses = (503,)  # the store of originals (an S3-compatible bucket) cannot be reached

    def perform_content_negotiation(self, request, force=False):
        # The body is the file, whatever the client asked for: `Accept: application/pdf` must not be a 406.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        summary="Download a document's original file",
        description=(
            "The bytes that were uploaded (API multipart, admin, `manage.py ingest`), with their type. PDFs, "
            "images and plain text open in the browser (a PDF at `#page=N`); other types download. 404 when the "
            "document was ingested as text or crawled; 503 `file_store_unavailable` when the store of originals "
            "cannot be reached."
        ),
        parameters=[DOCUMENT_ID],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="The original file."),
        },
    )
    def get(self, request, pk: str):
        document = _document(pk, "file_sha256", "file_name", "file_type", "file_size")
        try:
            stored = file_open(document)
        except FileStoreUnavailable as exc:
            raise ApiError(
                "The store of original files cannot be reached; try again later.",
                code="file_store_unavailable",
                status_code=503,
            ) from exc
        if stored is None:
            if document.file_sha256:
                # Named by the document but not in the store: lost, or stored before a switch of stores.
                logger.warning("document %s: original %s is missing from the file store", pk, document.file_sha256)
                raise NotFound("This document's original file is missing from the file store.")
            raise NotFound("This document has no original file: it was sent as text or crawled.")
        content_type = document.file_type or "application/octet-stream"
        inline = content_type in INLINE_TYPES
        # Streamed in blocks from the disk or the bucket: never the whole file in memory.
        response = FileResponse(
            stored.stream,
            content_type=content_type,
            as_attachment=not inline,
            filename=document.file_name or f"document-{document.pk}",
        )
        response["Content-Length"] = str(stored.size)
        response["X-Content-Type-Options"] = "nosniff"
        if content_type != "application/pdf":
            # Chromium will not show a PDF in a sandboxed document; everything else gets no script at all.
            response["Content-Security-Policy"] = "sandbox"
        response["ETag"] = f'"{document.file_sha256}"'
        response["Cache-Control"] = "private, no-cache"
        return response


class DocumentProgressView(APIView):
    @extend_schema(
        summary="A document's indexing progress",
        parameters=[DOCUMENT_ID],
        description=(
            "Chunk counts by vector index status, and the distinct errors of failed chunks (at most "
            f"{ERRORS_SHOWN}). `done` is true once no chunk is pending. `waiting_for_worker` is true while "
            "chunks are pending and no task worker is running to index them (start `manage.py db_worker`, "
            "or set EMBEDDED_WORKER=true). Cheap to poll: no text is read.\n\n"
            "A scan read in the background is `status: processing` (`done` false) with `reading`: the page OCR "
            "is on (`page`, 0 before it starts) of `pages`; then `active` and indexing as any document, or "
            "`failed` (`done` true) with the reason in `error`."
        ),
        responses=inline_serializer(
            "DocumentProgress",
            {
                "id": serializers.IntegerField(),
                "status": serializers.ChoiceField(Document.Status.choices),
                "error": serializers.CharField(help_text="Why the document failed to be read; else empty."),
                "reading": inline_serializer(
                    "DocumentReading",
                    {
                        "page": serializers.IntegerField(help_text="The page OCR is reading now; 0 before it starts."),
                        "pages": serializers.IntegerField(help_text="Pages OCR will read."),
                    },
                    allow_null=True,
                    help_text="While processing: how far the reading is; else null.",
                ),
                "chunks": serializers.IntegerField(help_text="All chunks of the document."),
                "indexed": serializers.IntegerField(),
                "pending": serializers.IntegerField(),
                "failed": serializers.IntegerField(),
                "done": serializers.BooleanField(),
                "waiting_for_worker": serializers.BooleanField(
                    help_text="Chunks are pending, or the file waits to be read, and no task worker is alive."
                ),
                "errors": serializers.ListField(child=serializers.CharField()),
            },
        ),
        examples=[
            OpenApiExample(
                "Indexing",
                value={
                    "id": 7,
                    "status": "active",
                    "error": "",
                    "reading": None,
                    "chunks": 400,
                    "indexed": 120,
                    "pending": 280,
                    "failed": 0,
                    "done": False,
                    "waiting_for_worker": False,
                    "errors": [],
                },
            ),
            OpenApiExample(
                "Reading a scan",
                value={
                    "id": 8,
                    "status": "processing",
                    "error": "",
                    "reading": {"page": 3, "pages": 10},
                    "chunks": 0,
                    "indexed": 0,
                    "pending": 0,
                    "failed": 0,
                    "done": False,
                    "waiting_for_worker": False,
                    "errors": [],
                },
            ),
            OpenApiExample(
                "Failed",
                value={
                    "id": 9,
                    "status": "failed",
                    "error": "No text was found in the image.",
                    "reading": None,
                    "chunks": 0,
                    "indexed": 0,
                    "pending": 0,
                    "failed": 0,
                    "done": True,
                    "waiting_for_worker": False,
                    "errors": [],
                },
            ),
        ],
    )
    def get(self, request, pk: str):
        document = _document(pk, "status", "error", "reading")
        status = Chunk.IndexStatus
        counts = Chunk.objects.filter(document_id=document.pk).aggregate(
            chunks=Count("pk"),
            indexed=Count("pk", filter=Q(index_status=status.INDEXED)),
            pending=Count("pk", filter=Q(index_status=status.PENDING)),
            failed=Count("pk", filter=Q(index_status=status.FAILED)),
        )
        errors = []
        if counts["failed"]:
            errors = list(
                Chunk.objects.filter(document_id=document.pk, index_status=status.FAILED)
                .exclude(last_error="")
                .order_by("last_error")
                .values_list("last_error", flat=True)
                .distinct()[:ERRORS_SHOWN]
            )
        processing = document.status == Document.Status.PROCESSING
        reading = document.reading or {}
        body = {
            "id": document.pk,
            "status": document.status,
            "error": document.error,
            "reading": {"page": reading.get("page", 0), "pages": reading.get("pages", 0)} if processing else None,
            **counts,
            # A document being read may still have the chunks of its previous version: not done.
            "done": counts["pending"] == 0 and not processing,
            "waiting_for_worker": (bool(counts["pending"]) or processing) and worker_missing(),
            "errors": errors,
        }
        return Response(body)
