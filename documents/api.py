"""REST API for sources, documents and chunks: thin shells over documents.services."""

from __future__ import annotations

from datetime import timedelta

import django_filters
from django import forms
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Subquery
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from documents.archives import ArchiveIsDocument, archive_ingest, is_archive
from documents.models import SEARCH_CONFIG, Chunk, Document, Source
from documents.selectors import source_by_id_or_name
from documents.services import (
    FILE_STORE_UNAVAILABLE,
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    METADATA_MAX_KEYS,
    DocumentGone,
    IngestError,
    document_delete,
    document_ingest,
    document_reembed,
    document_update,
    metadata_check,
    source_delete,
    source_get_or_create,
)
from documents.tasks import document_read_enqueue
from ragsite.api import MAX_ID, ApiError, JSONObjectField, error_body, object_id
from ragsite.openapi import ERROR_RESPONSES, ErrorSerializer

DEFAULT_API_SOURCE = "api"
METADATA_HELP = (
    f"A JSON object: at most {METADATA_MAX_DEPTH} levels deep, {METADATA_MAX_KEYS} keys and "
    f"{METADATA_MAX_BYTES // 1024} KB as JSON; no NUL characters."
)
MAX_UTC_OFFSET = timedelta(hours=14)  # the widest offset in use (Kiribati, UTC+14)


def ingest_error(exc: IngestError) -> ApiError:
    status_code = {"too_large": 413, "conflict": 409, FILE_STORE_UNAVAILABLE: 503}.get(exc.code, 400)
    return ApiError(exc.message, field=exc.field, code=exc.code, status_code=status_code)


# --- Sources ---------------------------------------------------------------------------------


class SourceSerializer(serializers.ModelSerializer):
    document_count = serializers.IntegerField(read_only=True)
    # Checked in validate_base_url, not by a URLField: the schema would say `format: uri`, but
    # Django's URLValidator accepts internationalised hosts and paths that a URI cannot hold unescaped.
    base_url = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, help_text="The site's root URL, or empty."
    )
    metadata = JSONObjectField(required=False, help_text=METADATA_HELP)

    class Meta:
        model = Source
        fields = ["id", "name", "kind", "base_url", "metadata", "document_count", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at", "document_count"]

    def validate_base_url(self, value):
        if value:
            try:
                URLValidator()(value)
            except DjangoValidationError:
                raise serializers.ValidationError("Enter a valid URL.") from None
        return value

    def validate_metadata(self, value):
        try:
            metadata_check(value)
        except IngestError as exc:
            raise serializers.ValidationError(exc.message) from None
        return value


class SourceFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the name (case-insensitive).")
    kind = django_filters.ChoiceFilter(choices=Source.Kind.choices, help_text="How the source's documents arrive.")

    class Meta:
        model = Source
        fields = ["kind", "name"]


SOURCE_EXAMPLE = {
    "id": 3,
    "name": "notes",
    "kind": "api",
    "base_url": "",
    "metadata": {"team": "research"},
    "document_count": 12,
    "created_at": "2025-05-01T09:30:00Z",
    "updated_at": "2025-05-02T16:05:12Z",
}
SOURCE_WRITE_EXAMPLE = OpenApiExample(
    "Source",
    value={
        "name": "handbook",
        "kind": "upload",
        "base_url": "https://handbook.example.com/",
        "metadata": {"team": "people"},
    },
    request_only=True,
)
SOURCE_EXAMPLES = [OpenApiExample("Source", value=SOURCE_EXAMPLE, response_only=True)]


@extend_schema_view(
    list=extend_schema(
        summary="List sources",
        description="Every source with its document count; filter by `kind` or part of the `name`.",
        examples=SOURCE_EXAMPLES,
    ),
    create=extend_schema(
        summary="Create a source",
        description="A named collection of documents (ingesting into an unknown source name creates it too).",
        examples=[SOURCE_WRITE_EXAMPLE, *SOURCE_EXAMPLES],
    ),
    retrieve=extend_schema(summary="Get a source", description="One source by id.", examples=SOURCE_EXAMPLES),
    partial_update=extend_schema(
        summary="Change a source",
        description="Change some fields: name, kind, base URL or metadata.",
        examples=[OpenApiExample("Rename", value={"name": "notes-2025"}, request_only=True), *SOURCE_EXAMPLES],
    ),
    update=extend_schema(
        summary="Replace a source",
        description="Replace all writable fields (a missing optional field goes back to its default).",
        examples=[SOURCE_WRITE_EXAMPLE, *SOURCE_EXAMPLES],
    ),
    destroy=extend_schema(
        summary="Delete a source with its documents, chunks and vectors",
        description="Deletes in one transaction; the vectors leave Qdrant after it commits.",
    ),
)
class SourceViewSet(viewsets.ModelViewSet):
    serializer_class = SourceSerializer
    filterset_class = SourceFilter
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name"]

    def get_queryset(self):
        return Source.objects.annotate(document_count=Count("documents"))

    def perform_create(self, serializer):
        # the list and detail querysets annotate document_count; a new source has none yet
        serializer.save().document_count = 0

    def perform_destroy(self, instance):
        if not source_delete(source=instance):
            raise NotFound("The source was deleted by another request.")


# --- Documents -------------------------------------------------------------------------------


class ChunkSerializer(serializers.ModelSerializer):
    document_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = Chunk
        fields = [
            "id",
            "document_id",
            "ordinal",
            "text",
            "context",
            "token_count",
            "char_start",
            "char_end",
            "heading_path",
            "metadata",
            "index_status",
            "indexed_at",
            "last_error",
        ]
        read_only_fields = fields


class DocumentSerializer(serializers.ModelSerializer):
    source = serializers.CharField(source="source.name", read_only=True)
    url = serializers.CharField(
        read_only=True, help_text="Where the document came from (http(s) or file URL), or empty."
    )
    source_id = serializers.IntegerField(read_only=True)
    chunk_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Document
        fields = [
            "id",
            "source",
            "source_id",
            "title",
            "url",
            "mime_type",
            "content_hash",
            "metadata",
            "status",
            "error",
            "chunk_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "status": {
                "help_text": "active (stored and searchable), processing (a scan waiting for or being read by OCR "
                "in the background; not searchable yet) or failed (its file could not be read: see `error`)."
            },
            "error": {"help_text": "Why the document failed to be read; empty otherwise."},
        }


class DocumentDetailSerializer(DocumentSerializer):
    chunks = ChunkSerializer(many=True, read_only=True)

    class Meta(DocumentSerializer.Meta):
        fields = [*DocumentSerializer.Meta.fields, "text", "chunks"]
        read_only_fields = fields


class DocumentCreateSerializer(serializers.Serializer):
    title = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    file = serializers.FileField(required=False)
    url = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    source = serializers.CharField(required=False, max_length=200, default=DEFAULT_API_SOURCE)
    mime_type = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    # Multipart forms send it as a JSON string, which the field parses; the ingest service checks it.
    metadata = JSONObjectField(required=False, default=dict, help_text=METADATA_HELP)

    def validate_url(self, value):
        if value and not value.lower().startswith(("http://", "https://", "file://")):
            raise serializers.ValidationError("url must be an http(s) URL.")
        return value

    def validate(self, attrs):
        has_text = "text" in attrs
        has_file = "file" in attrs
        if has_text == has_file:
            raise serializers.ValidationError({"text": ["Give either 'text' (JSON) or 'file' (multipart), not both."]})
        if has_text and not attrs["text"].strip():
            raise serializers.ValidationError({"text": ["text may not be blank."]})
        return attrs


class DocumentUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(required=False, max_length=1000)
    metadata = JSONObjectField(required=False, help_text=f"Replaces the stored metadata. {METADATA_HELP}")

    def to_internal_value(self, data):
        # A field PATCH does not change used to be ignored with a 200, so a client sending
        # `text` believed the document changed.
        if isinstance(data, dict):
            unknown = sorted(str(name) for name in data if name not in self.fields)
            if unknown:
                message = "PATCH changes only title and metadata; to change the text or url, ingest the document again."
                raise serializers.ValidationError({name: [message] for name in unknown})
        return super().to_internal_value(data)


class IngestResponseSerializer(DocumentSerializer):
    created = serializers.BooleanField(read_only=True)
    changed = serializers.BooleanField(read_only=True)
    chunks_added = serializers.IntegerField(read_only=True)
    chunks_removed = serializers.IntegerField(read_only=True)

    class Meta(DocumentSerializer.Meta):
        fields = [*DocumentSerializer.Meta.fields, "created", "changed", "chunks_added", "chunks_removed"]
        read_only_fields = fields


class ArchiveFileSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The file's path inside the archive: its name (a label only).")
    status = serializers.ChoiceField(
        choices=["ingested", "processing", "unchanged", "refused"],
        help_text="ingested (a new or changed document), processing (a scan accepted and being read by OCR in the "
        "background: follow its document's progress), unchanged (already stored as it is) or refused.",
    )
    document_id = serializers.IntegerField(allow_null=True, help_text="The document's id; null when refused.")
    title = serializers.CharField(help_text="The document's title; empty when refused.")
    chunks = serializers.IntegerField(help_text="The document's chunks; 0 when refused.")
    created = serializers.BooleanField(help_text="A new document (not an existing one changed).")
    code = serializers.CharField(
        help_text="Why it was refused, when it was: unsupported_type, empty, too_large, archive_too_large, "
        "unreadable, encrypted, nested_archive, unsafe_path, symlink, duplicate, invalid; else empty."
    )
    reason = serializers.CharField(help_text="Why it was refused, in a sentence; else empty.")


class ArchiveTotalsSerializer(serializers.Serializer):
    files = serializers.IntegerField(help_text="Files listed in `files`.")
    ingested = serializers.IntegerField()
    processing = serializers.IntegerField(help_text="Scans accepted and read by OCR in the background.")
    unchanged = serializers.IntegerField()
    refused = serializers.IntegerField()
    skipped = serializers.IntegerField(
        help_text="Operating-system leftovers and hidden files passed over (__MACOSX/, .DS_Store, Thumbs.db, .*)."
    )
    chunks = serializers.IntegerField(help_text="Chunks of the ingested and unchanged documents.")


class ArchiveReportSerializer(serializers.Serializer):
    archive = serializers.CharField(help_text="The uploaded archive's name.")
    source = serializers.CharField(help_text="The source its files went into.")
    files = ArchiveFileSerializer(many=True, help_text="One entry per file of the archive, in the archive's order.")
    totals = ArchiveTotalsSerializer()


class BoundedIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """ISO 8601, with the UTC offsets that exist (PostgreSQL rejects an offset such as -21:41,
    which Python parses, with an error that would otherwise surface as a 500)."""

    def to_python(self, value):
        parsed = super().to_python(value)
        offset = parsed.utcoffset() if parsed is not None else None
        if offset is not None and abs(offset) > MAX_UTC_OFFSET:
            raise forms.ValidationError(
                "Enter a date/time with a UTC offset between -14:00 and +14:00.", code="invalid"
            )
        return parsed


class BoundedIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = BoundedIsoDateTimeField


class DocumentFilter(django_filters.FilterSet):
    source = django_filters.CharFilter(method="filter_source", help_text="Source id or name.")
    q = django_filters.CharFilter(
        method="filter_q",
        help_text="Full-text query: documents with a chunk that matches it (its text, title and headings).",
    )
    url = django_filters.CharFilter(help_text="The document's exact URL.")
    mime_type = django_filters.CharFilter(help_text="Exact MIME type, e.g. text/markdown or application/pdf.")
    status = django_filters.ChoiceFilter(choices=Document.Status.choices, help_text="Ingestion status.")
    created_after = BoundedIsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="ISO 8601 date-time: documents created at or after it."
    )
    updated_after = BoundedIsoDateTimeFilter(
        field_name="updated_at", lookup_expr="gte", help_text="ISO 8601 date-time: documents changed at or after it."
    )

    class Meta:
        model = Document
        fields = ["status", "mime_type", "url"]

    def filter_source(self, queryset, name, value):
        source = source_by_id_or_name(value)
        return queryset.filter(source=source) if source is not None else queryset.none()

    def filter_q(self, queryset, name, value):
        value = value.strip()[:1000]
        if not value:
            return queryset
        query = SearchQuery(value, search_type="websearch", config=SEARCH_CONFIG)
        # Documents with a matching chunk (title and headings are in each chunk's vector), ranked
        # by their best chunk: there is no document-level vector (documents.models.Document).
        chunks = Chunk.objects.filter(document_id=OuterRef("pk"), search_vector=query)
        best = chunks.annotate(rank=SearchRank(F("search_vector"), query)).order_by("-rank").values("rank")[:1]
        return queryset.filter(Exists(chunks)).annotate(rank=Subquery(best)).order_by("-rank", "-id")


DOCUMENT_EXAMPLE = {
    "id": 7,
    "source": "notes",
    "source_id": 3,
    "title": "Tea",
    "url": "https://example.com/tea",
    "mime_type": "text/markdown",
    "content_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "metadata": {"lang": "en"},
    "status": "active",
    "error": "",
    "chunk_count": 2,
    "created_at": "2025-05-01T09:30:00Z",
    "updated_at": "2025-05-01T09:30:00Z",
}
CHUNK_EXAMPLE = {
    "id": "6f1c9f0e-3b7a-4c1e-9d0e-2a1b3c4d5e6f",
    "document_id": 7,
    "ordinal": 0,
    "text": "Green tea is steamed or pan-fired soon after picking.",
    "context": "Tea > Processing",
    "token_count": 12,
    "char_start": 0,
    "char_end": 53,
    "heading_path": ["Processing"],
    "metadata": {},
    "index_status": "indexed",
    "indexed_at": "2025-05-01T09:30:02Z",
    "last_error": "",
}
INGEST_EXAMPLE = {**DOCUMENT_EXAMPLE, "created": True, "changed": True, "chunks_added": 2, "chunks_removed": 0}
ARCHIVE_FILE_EXAMPLE = {
    "name": "guides/tea.md",
    "status": "ingested",
    "document_id": 7,
    "title": "Tea",
    "chunks": 2,
    "created": True,
    "code": "",
    "reason": "",
}
ARCHIVE_REFUSED_EXAMPLE = {
    **ARCHIVE_FILE_EXAMPLE,
    "name": "tools/setup.exe",
    "status": "refused",
    "document_id": None,
    "title": "",
    "chunks": 0,
    "created": False,
    "code": "unsupported_type",
    "reason": "Unsupported file type (application/x-msdownload); ragsite reads .txt, .md, .html, ... files.",
}
ARCHIVE_EXAMPLE = {
    "archive": "handbook.zip",
    "source": "notes",
    "files": [
        ARCHIVE_FILE_EXAMPLE,
        {
            **ARCHIVE_FILE_EXAMPLE,
            "name": "guides/coffee.docx",
            "status": "unchanged",
            "document_id": 8,
            "title": "Coffee",
            "created": False,
        },
        ARCHIVE_REFUSED_EXAMPLE,
    ],
    "totals": {"files": 3, "ingested": 1, "processing": 0, "unchanged": 1, "refused": 1, "skipped": 2, "chunks": 4},
}
ARCHIVE_REFUSED_MESSAGE = "No file of the archive could be ingested: 1 refused."
INGEST_OR_ARCHIVE = PolymorphicProxySerializer(
    component_name="IngestOrArchiveReport",
    serializers=[IngestResponseSerializer, ArchiveReportSerializer],
    resource_type_field_name=None,
)


@extend_schema_view(
    list=extend_schema(
        summary="List documents",
        description="Newest first; filter by source, status, MIME type, URL or date. `q` is a full-text query: documents "
        "with a chunk that matches it (the chunk's text, the title and headings), ranked by their best chunk.",
        examples=[OpenApiExample("Document", value=DOCUMENT_EXAMPLE, response_only=True)],
    ),
    retrieve=extend_schema(
        summary="Get a document with its chunks",
        description="The document's full text and its chunks in order, each with its index status.",
        examples=[
            OpenApiExample(
                "Document",
                value={
                    **DOCUMENT_EXAMPLE,
                    "text": "# Tea\n\n## Processing\n\nGreen tea is steamed...",
                    "chunks": [CHUNK_EXAMPLE],
                },
                response_only=True,
            )
        ],
    ),
    destroy=extend_schema(
        summary="Delete a document (its vectors leave Qdrant after commit)",
        description="Deletes the document and its chunks; its vectors leave the vector store after the commit.",
    ),
)
class DocumentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    filterset_class = DocumentFilter
    ordering_fields = ["created_at", "updated_at", "title", "id"]
    ordering = ["-updated_at", "-id"]

    @property
    def error_statuses(self) -> tuple[int, ...]:
        # An upload's original goes to the file store, which may be down (ragsite.openapi reads this).
        return (503,) if self.action == "create" else ()

    def get_queryset(self):
        qs = Document.objects.select_related("source").annotate(chunk_count=Count("chunks"))
        if self.action == "retrieve":
            qs = qs.prefetch_related("chunks")
        elif self.action == "list":
            qs = qs.defer("text")  # not in a list item, and megabytes per large document
        return qs

    def get_serializer_class(self):
        if self.action == "retrieve":
            return DocumentDetailSerializer
        if self.action == "create":
            return DocumentCreateSerializer
        if self.action == "partial_update":
            return DocumentUpdateSerializer
        return DocumentSerializer

    @extend_schema(
        summary="Ingest a document",
        description=(
            "JSON `{title, text, url?, source?, metadata?}` or multipart with `file`. Re-sending identical "
            "content changes nothing (200, `changed: false`); changed content re-embeds only changed chunks.\n\n"
            "A file that needs OCR (a PNG, JPEG or TIFF image, or a PDF with pages that have no text layer) is "
            "checked (type, size, pixels) and kept, and read in the background: the answer is 202 with the "
            "document in `status: processing` (not searchable yet); follow `GET /api/documents/{id}/progress` "
            "until it is `active` (or `failed`, with the reason in `error`). Sending the same file again once it "
            "is read is `unchanged` (200); sending a failed one again reads it again.\n\n"
            "A `.zip` file (named so, sent as application/zip, or zip bytes that are no Office/EPUB file) is "
            "unpacked: each file in it is ingested as a document of its own, named by its path inside the "
            "archive, with `metadata` and into `source`; with `url`, each file's url is `url#path`, so sending a "
            "changed archive again updates its files in place. The answer is a report (`archive`, `files`, "
            "`totals`) with each file ingested, processing (a scan read in the background), unchanged or refused "
            "and why: 201 if any file was ingested, else 202 if any is processing, 200 if none was but some were "
            "unchanged, 400 (the error, with the report beside it) if every file was refused. Bounds: INGEST_ZIP_MAX_FILES entries, INGEST_MAX_BYTES per file and INGEST_ZIP_MAX_BYTES "
            "for all files unpacked; archives inside it are refused, not unpacked; folders, __MACOSX/, "
            ".DS_Store, Thumbs.db and hidden files are skipped. A damaged archive, or one over the entry limit, "
            "is a 400 naming `file`."
        ),
        request={"application/json": DocumentCreateSerializer, "multipart/form-data": DocumentCreateSerializer},
        responses={
            201: INGEST_OR_ARCHIVE,
            202: INGEST_OR_ARCHIVE,
            200: INGEST_OR_ARCHIVE,
            400: OpenApiResponse(
                ErrorSerializer,
                description="Invalid input: `error.fields` names each field at fault. For an archive whose "
                "every file was refused, the report (`archive`, `files`, `totals`) is beside `error`.",
            ),
        },
        examples=[
            OpenApiExample(
                "Text",
                value={
                    "title": "Tea",
                    "text": "Green tea is steamed; black tea is oxidised.",
                    "source": "notes",
                    "metadata": {"lang": "en"},
                },
                request_only=True,
            ),
            OpenApiExample("Created", value=INGEST_EXAMPLE, response_only=True, status_codes=["201"]),
            OpenApiExample(
                "Scan accepted",
                value={
                    **INGEST_EXAMPLE,
                    "title": "receipt.png",
                    "mime_type": "image/png",
                    "content_hash": "",
                    "metadata": {"filename": "receipt.png"},
                    "status": "processing",
                    "chunk_count": 0,
                    "chunks_added": 0,
                },
                response_only=True,
                status_codes=["202"],
            ),
            OpenApiExample(
                "Unchanged",
                value={**INGEST_EXAMPLE, "created": False, "changed": False, "chunks_added": 0},
                response_only=True,
                status_codes=["200"],
            ),
            OpenApiExample("Archive", value=ARCHIVE_EXAMPLE, response_only=True, status_codes=["201"]),
            OpenApiExample(
                "Archive unchanged",
                value={
                    **ARCHIVE_EXAMPLE,
                    "files": [{**ARCHIVE_FILE_EXAMPLE, "status": "unchanged", "created": False}],
                    "totals": {
                        "files": 1,
                        "ingested": 0,
                        "processing": 0,
                        "unchanged": 1,
                        "refused": 0,
                        "skipped": 0,
                        "chunks": 2,
                    },
                },
                response_only=True,
                status_codes=["200"],
            ),
            OpenApiExample("Invalid", value=ERROR_RESPONSES["400"][1], response_only=True, status_codes=["400"]),
            OpenApiExample(
                "Archive refused",
                value={
                    **error_body("archive_refused", ARCHIVE_REFUSED_MESSAGE, {"file": [ARCHIVE_REFUSED_MESSAGE]}),
                    **ARCHIVE_EXAMPLE,
                    "files": [ARCHIVE_REFUSED_EXAMPLE],
                    "totals": {
                        "files": 1,
                        "ingested": 0,
                        "processing": 0,
                        "unchanged": 0,
                        "refused": 1,
                        "skipped": 0,
                        "chunks": 0,
                    },
                },
                response_only=True,
                status_codes=["400"],
            ),
        ],
    )
    def create(self, request, *args, **kwargs):
        serializer = DocumentCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        upload = data.get("file")
        if upload is not None and _upload_is_archive(upload, data["mime_type"]):
            try:
                return self._create_from_archive(data, upload)
            except ArchiveIsDocument:
                upload.seek(0)  # an Office/EPUB file named .zip: its content decides, it is one document
        try:
            with transaction.atomic():
                # A new source is labelled by how its first document came: a file, or text over the API.
                kind = Source.Kind.API if upload is None else Source.Kind.UPLOAD
                source = source_get_or_create(name=data["source"], kind=kind)
                result = document_ingest(
                    source=source,
                    title=data["title"],
                    url=data["url"],
                    text=None if upload else data["text"],
                    data=upload.read() if upload else None,
                    filename=upload.name if upload else "",
                    mime=data["mime_type"] or (getattr(upload, "content_type", "") if upload else "text/plain"),
                    metadata=data["metadata"],
                    keep_file=bool(upload),
                    # A scan is read by the task worker: OCR takes longer than a request may.
                    defer_ocr=True,
                )
                if result.deferred:
                    document_read_enqueue(result.document.pk)
                # Read in the same transaction: a DELETE right after the commit must not turn
                # this acknowledged ingest into a 500.
                document = self.get_queryset().get(pk=result.document.pk)
        except IngestError as exc:
            raise ingest_error(exc) from exc
        for name in ("created", "changed", "chunks_added", "chunks_removed"):
            setattr(document, name, getattr(result, name))
        body = IngestResponseSerializer(document).data
        if result.deferred:
            return Response(body, status=status.HTTP_202_ACCEPTED)
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    def _create_from_archive(self, data: dict, upload) -> Response:
        """Each file of the uploaded zip as a document of its own; the per-file report as the answer.

        No transaction around it all: the service stores the files batch by batch, so what was
        stored stays stored should the request die half-way, and no lock is held for its length.
        """
        if data["title"].strip():
            raise ApiError(
                "title does not apply to an archive: each of its files is titled from its own content or name.",
                field="title",
            )
        try:
            source = source_get_or_create(name=data["source"], kind=Source.Kind.UPLOAD)
            report = archive_ingest(
                source=source,
                archive=upload.file,
                name=upload.name,
                url=data["url"],
                metadata=data["metadata"],
                defer_ocr=True,
            )
        except IngestError as exc:
            raise ingest_error(exc) from exc
        body = report.as_dict()
        if report.count("ingested"):
            return Response(body, status=status.HTTP_201_CREATED)
        if report.count("processing"):
            return Response(body, status=status.HTTP_202_ACCEPTED)
        if report.count("unchanged"):
            return Response(body, status=status.HTTP_200_OK)
        if report.files:
            message = f"No file of the archive could be ingested: {report.count('refused')} refused."
        else:
            message = f"The archive holds no file to ingest ({report.skipped} skipped)."
        return Response(
            {**error_body("archive_refused", message, {"file": [message]}), **body}, status=status.HTTP_400_BAD_REQUEST
        )

    @extend_schema(
        summary="Change a document's title or metadata",
        description="Its chunks keep their text; their vector payloads follow the new title and metadata.",
        request=DocumentUpdateSerializer,
        responses=DocumentSerializer,
        examples=[
            OpenApiExample("Metadata", value={"metadata": {"lang": "en", "reviewed": "yes"}}, request_only=True),
            OpenApiExample("Document", value=DOCUMENT_EXAMPLE, response_only=True),
        ],
    )
    def partial_update(self, request, *args, **kwargs):
        document = self.get_object()
        serializer = DocumentUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                document_update(document=document, **serializer.validated_data)
                # Read before the commit releases the lock: a DELETE may follow at once.
                body = DocumentSerializer(self.get_queryset().get(pk=document.pk)).data
        except IngestError as exc:
            raise ingest_error(exc) from exc
        except DocumentGone:
            raise NotFound("The document was deleted by another request.") from None
        return Response(body)

    def perform_destroy(self, instance):
        if not document_delete(document=instance):
            raise NotFound("The document was deleted by another request.")

    @extend_schema(
        summary="Re-embed a document's chunks",
        description="Marks every chunk pending and queues the vector sync; answers at once with the count queued.",
        request=None,
        responses={202: inline_serializer("Reembed", {"queued": serializers.IntegerField(help_text="Chunks queued.")})},
        examples=[OpenApiExample("Queued", value={"queued": 12}, response_only=True, status_codes=["202"])],
    )
    @action(detail=True, methods=["post"])
    def reembed(self, request, pk=None):
        document = self.get_object()
        queued = document_reembed(document=document)
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)


def _upload_is_archive(upload, mime_type: str) -> bool:
    head = upload.read(8)
    upload.seek(0)
    return is_archive(name=upload.name or "", content_type=mime_type or upload.content_type or "", head=head)


class ObjectIdField(forms.CharField):
    """An object id in a query parameter: ASCII digits within bigint, or a 400 naming the parameter."""

    def to_python(self, value):
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        pk = object_id(value)
        if pk is None:
            raise forms.ValidationError(f"Enter an id from 1 to {MAX_ID}.", code="invalid")
        return pk


class ObjectIdFilter(django_filters.Filter):
    field_class = ObjectIdField


class ChunkFilter(django_filters.FilterSet):
    index_status = django_filters.ChoiceFilter(
        choices=Chunk.IndexStatus.choices, help_text="Vector index status: pending, indexed or failed."
    )
    # Not a ModelChoiceFilter: an id that names no document is an empty list, not a 400.
    document = ObjectIdFilter(field_name="document_id", help_text="Only this document's chunks (its id).")

    class Meta:
        model = Chunk
        fields = ["document", "index_status"]


@extend_schema_view(
    list=extend_schema(
        summary="List chunks",
        description="Read-only: chunks change only by ingesting their document again. In document order.",
        parameters=[
            OpenApiParameter(
                "document",
                {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                description="Only this document's chunks (its id).",
            )
        ],
        examples=[OpenApiExample("Chunk", value=CHUNK_EXAMPLE, response_only=True)],
    ),
    retrieve=extend_schema(
        summary="Get a chunk",
        description="One chunk by its UUID (also its point id in the vector store).",
        examples=[OpenApiExample("Chunk", value=CHUNK_EXAMPLE, response_only=True)],
    ),
)
class ChunkViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ChunkSerializer
    filterset_class = ChunkFilter
    ordering_fields = ["ordinal", "created_at"]
    ordering = ["document_id", "ordinal"]

    def get_queryset(self):
        return Chunk.objects.all()
