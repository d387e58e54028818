"""Sources, documents and chunks in the admin: what is stored and how far its embedding got, at a glance.

Lists annotate their counts in the list's own query (no query per row); a document's page shows its
chunk counts and the first chunks, never all of them (a PDF's 2,000 chunks as an inline made a page
36,000 px tall). Actions and deletions go through documents.services and say what they did.
"""

from __future__ import annotations

from collections import Counter

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.postgres.search import SearchQuery
from django.db import models
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import Length, Substr
from django.forms.fields import InvalidJSONInput
from django.utils.html import format_html, format_html_join

from documents.models import SEARCH_CONFIG, Chunk, Document, Source
from documents.services import (
    IngestError,
    document_delete,
    document_ingest,
    document_read_again,
    document_reembed,
    document_update,
    metadata_check,
    source_delete,
)
from documents.tasks import document_read_enqueue
from ragsite.admin import (
    SAMPLE_ROWS,
    CountedDeletionAdmin,
    NarrowedFilter,
    ago,
    badge,
    change_link,
    changelist_url,
    clipped,
    progress,
    sample_table,
    with_sub,
)
from ragsite.progress import counted

# Characters of a document's text shown on its page (the rest stays in the database).
TEXT_PREVIEW_CHARS = 5000


class MetadataFormField(forms.JSONField):
    """Metadata in admin forms: the ingest service's checks, and no crash on JSON nested past
    Python's recursion limit (json.loads raises RecursionError, which Django's field lets through)."""

    def to_python(self, value):
        if value in self.empty_values:
            return {}
        try:
            return super().to_python(value)
        except RecursionError:
            raise forms.ValidationError("metadata nests far too deeply.", code="invalid") from None

    def bound_data(self, data, initial):
        # Shown back as typed: parsing it again could recurse past the limit, and re-serializing
        # a refused value (a lone surrogate) would fail to render the page.
        return initial if self.disabled or data is None else InvalidJSONInput(data)

    def validate(self, value):
        super().validate(value)
        try:
            metadata_check(value)
        except IngestError as exc:
            raise forms.ValidationError(exc.message, code="invalid") from None


METADATA_FORM_FIELD = {models.JSONField: {"form_class": MetadataFormField}}


def chunk_counts(prefix: str = "chunks") -> dict:
    """Annotations counting a row's chunks by state, for one GROUP BY query over a whole list.

    ``prefix`` is the path to the chunks: "chunks" from a document, "documents__chunks" from a source.
    """
    status = f"{prefix}__index_status"
    failed = Q(**{status: Chunk.IndexStatus.FAILED})
    return {
        "_chunks": Count(prefix),
        "_indexed": Count(prefix, filter=Q(**{status: Chunk.IndexStatus.INDEXED})),
        "_pending": Count(prefix, filter=Q(**{status: Chunk.IndexStatus.PENDING})),
        "_failed": Count(prefix, filter=failed),
        "_quarantined": Count(
            prefix, filter=failed & Q(**{f"{prefix}__sync_attempts__gte": settings.VECTORS_SYNC_MAX_ATTEMPTS})
        ),
    }


def embedding_badge(obj) -> str:
    """The state of a row's vectors from its chunk counts: the worst state wins."""
    if obj._quarantined:
        return badge(f"{obj._quarantined:,} quarantined", "bad")
    if obj._failed:
        return badge(f"{obj._failed:,} failed", "bad")
    if obj._pending:
        return badge(f"{obj._pending:,} pending", "busy")
    if obj._chunks:
        return badge("indexed", "ok")
    return badge("no chunks", "quiet")


def waiting(obj) -> str:
    """ "30 pending · 2 failed" (empty when every chunk is embedded)."""
    parts = [f"{obj._pending:,} pending" if obj._pending else "", f"{obj._failed:,} failed" if obj._failed else ""]
    return " · ".join(part for part in parts if part)


def chunk_summary(obj, *, chunks_url: str) -> str:
    """Counts by state (from the row's annotations) and the links to the chunks in each state."""
    states = [
        ("total", obj._chunks, ""),
        ("embedded", obj._indexed, Chunk.IndexStatus.INDEXED),
        ("pending", obj._pending, Chunk.IndexStatus.PENDING),
        ("failed", obj._failed, Chunk.IndexStatus.FAILED),
    ]
    items = format_html_join(
        "",
        '<li><strong>{}</strong> <a href="{}">{}</a></li>',
        (
            (f"{count:,}", chunks_url + (f"&index_status__exact={status}" if status else ""), label)
            for label, count, status in states
        ),
    )
    quarantined = (
        format_html("<li>{}</li>", "quarantined after repeated sync failures: re-embed to retry")
        if obj._quarantined
        else ""
    )
    return format_html('<ul class="rs-counts"><li>{}</li>{}{}</ul>', embedding_badge(obj), items, quarantined)


def last_error(chunks) -> str:
    """The error of the chunk that failed last (its retry is the latest), with its ordinal."""
    row = (
        chunks.exclude(last_error="")
        .order_by(F("sync_retry_at").desc(nulls_last=True), "ordinal")
        .values_list("ordinal", "last_error")
        .first()
    )
    if row is None:
        return ""
    return format_html('<p>Last error (chunk {}):</p><pre class="rs-error">{}</pre>', row[0], row[1][:2000])


def reembed_message(documents: int, chunks: int, empty: int = 0) -> str:
    """ "Queued 12 documents (340 chunks) for re-embedding; 1 had no chunks." """
    message = f"Queued {counted(documents, 'document')} ({counted(chunks, 'chunk')}) for re-embedding"
    if empty:
        message += f"; {counted(empty, 'document')} had no chunks"
    return message + "."


def reembed(documents) -> tuple[int, int, int]:
    """Re-embed each document through the service: (documents queued, chunks queued, documents without chunks)."""
    queued = chunks = empty = 0
    ids = list(documents.order_by().values_list("pk", flat=True))
    for document in Document.objects.filter(pk__in=ids).only("pk").order_by("pk"):
        count = document_reembed(document=document)
        if count:
            queued += 1
            chunks += count
        else:
            empty += 1  # no chunks, or deleted meanwhile
    return queued, chunks, empty


@admin.register(Source)
class SourceAdmin(CountedDeletionAdmin):
    formfield_overrides = METADATA_FORM_FIELD
    list_display = ["name_wide", "kind_badge", "documents", "vectors", "updated"]
    list_display_links = ["name_wide"]
    list_filter = ["kind"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["contents", "created_at", "updated_at"]
    actions = ["reembed", "delete_selected"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_documents=Count("documents", distinct=True), **chunk_counts("documents__chunks"))
        )

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ["created_at", "updated_at"]

    def get_fieldsets(self, request, obj=None):
        fields = ["name", "kind", "base_url", "metadata"]
        if obj is None:
            return [(None, {"fields": fields})]
        return [(None, {"fields": fields}), ("Contents", {"fields": ["contents", "created_at", "updated_at"]})]

    @admin.display(description="name", ordering="name")
    def name_wide(self, obj):
        return with_sub(clipped(obj.name), obj.base_url)

    @admin.display(description="documents", ordering="_documents")
    def documents(self, obj):
        return format_html(
            '<a href="{}">{}</a>', changelist_url(Document, source__id__exact=obj.pk), f"{obj._documents:,}"
        )

    @admin.display(description="kind", ordering="kind")
    def kind_badge(self, obj):
        return badge(obj.get_kind_display().lower(), "quiet")

    @admin.display(description="embedded", ordering="_indexed")
    def vectors(self, obj):
        return with_sub(progress(obj._indexed, obj._chunks), waiting(obj))

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj):
        return ago(obj.updated_at)

    @admin.display(description="documents and chunks")
    def contents(self, obj):
        documents = format_html(
            '<p><a href="{}">{}</a></p>',
            changelist_url(Document, source__id__exact=obj.pk),
            counted(obj._documents, "document"),
        )
        chunks = chunk_summary(obj, chunks_url=changelist_url(Chunk, source=obj.pk))
        return format_html("{}{}{}", documents, chunks, last_error(Chunk.objects.filter(document__source=obj)))

    @admin.action(description="Re-embed every document of the selected sources")
    def reembed(self, request, queryset):
        queued, chunks, empty = reembed(Document.objects.filter(source__in=queryset.values("pk")))
        sources = counted(queryset.count(), "source")
        self.message_user(request, f"{sources}: {reembed_message(queued, chunks, empty)}", messages.SUCCESS)

    def deleted_with(self, queryset):
        documents = Document.objects.filter(source__in=queryset.values("pk"))
        return {Document: documents.count(), Chunk: Chunk.objects.filter(document__in=documents).count()}

    def delete_queryset(self, request, queryset):
        """Through the service (locks in the order every writer takes them), counting as it goes."""
        deleted = Counter()
        for source in Source.objects.filter(pk__in=queryset.values("pk")).order_by("pk"):
            counts = self.deleted_with(Source.objects.filter(pk=source.pk))
            if source_delete(source=source):
                deleted.update({Source: 1, **counts})
        return deleted

    def delete_model(self, request, obj):
        source_delete(source=obj)


class DocumentFilter(NarrowedFilter):
    title = "document"
    parameter_name = "document"
    parent = Document
    lookup = "document_id"


class SourceFilter(NarrowedFilter):
    title = "source"
    parameter_name = "source"
    parent = Source
    lookup = "document__source_id"


class EmbeddingFilter(admin.SimpleListFilter):
    """Documents by the state of their chunks' vectors."""

    title = "embedding"
    parameter_name = "embedding"

    def lookups(self, request, model_admin):
        return [
            ("pending", "Pending"),
            ("failed", "Failed"),
            ("quarantined", "Quarantined"),
            ("indexed", "All indexed"),
            ("empty", "No chunks"),
        ]

    def queryset(self, request, queryset):
        chunks = Chunk.objects.filter(document_id=OuterRef("pk"))
        failed = chunks.filter(index_status=Chunk.IndexStatus.FAILED)
        worn = Q(sync_attempts__gte=settings.VECTORS_SYNC_MAX_ATTEMPTS)
        match self.value():
            case "pending":
                return queryset.filter(Exists(chunks.filter(index_status=Chunk.IndexStatus.PENDING)))
            case "failed":
                return queryset.filter(Exists(failed))
            case "quarantined":
                return queryset.filter(Exists(failed.filter(worn)))
            case "indexed":
                unindexed = chunks.exclude(index_status=Chunk.IndexStatus.INDEXED)
                return queryset.filter(Exists(chunks)).exclude(Exists(unindexed))
            case "empty":
                return queryset.exclude(Exists(chunks))
        return queryset


class DocumentIngestForm(forms.ModelForm):
    """Add a document by uploading a file or pasting text; ingestion runs in clean()."""

    file = forms.FileField(
        required=False,
        help_text="Text, Markdown, HTML, PDF, Word, PowerPoint, Excel/CSV, OpenDocument, EPUB, RTF or an image (OCR).",
    )
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 12}), help_text="…or paste text.")
    metadata = MetadataFormField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text='JSON object, e.g. {"lang": "en"}'
    )

    class Meta:
        model = Document
        fields = ["source", "title", "url"]

    def clean(self):
        cleaned = super().clean()
        upload, text = cleaned.get("file"), cleaned.get("text")
        if bool(upload) == bool(text and text.strip()):
            raise forms.ValidationError("Upload a file or paste text (one of the two).")
        if self.errors or cleaned.get("source") is None:
            return cleaned
        try:
            self.result = document_ingest(
                source=cleaned["source"],
                title=cleaned.get("title") or "",
                url=cleaned.get("url") or "",
                data=upload.read() if upload else None,
                text=None if upload else text,
                filename=upload.name if upload else "",
                mime=getattr(upload, "content_type", "") if upload else "text/plain",
                metadata=cleaned.get("metadata") or {},
                keep_file=bool(upload),
                # A scan is read by the task worker, as over the API: OCR of a few pages would
                # outlast the request's time limit and hold the server's process meanwhile.
                defer_ocr=bool(upload),
            )
        except IngestError as exc:
            field = exc.field if exc.field in self.fields else ("file" if upload else "text")
            self.add_error(field, exc.message)
        return cleaned


@admin.register(Document)
class DocumentAdmin(CountedDeletionAdmin):
    list_display = ["title_wide", "source_clip", "state", "embedded", "updated"]
    list_display_links = ["title_wide"]
    list_filter = [EmbeddingFilter, "status", "source", "mime_type"]
    list_select_related = ["source"]
    search_fields = ["title", "url"]
    readonly_fields = ["content_hash", "created_at", "updated_at"]
    actions = ["reembed", "read_again", "delete_selected"]
    formfield_overrides = METADATA_FORM_FIELD

    # A stored document changes its title and metadata through the update service (which
    # re-syncs its chunks' payloads); its source, URL and text only by ingesting it again.
    CHANGE_READONLY = [
        "source",
        "link",
        "mime_type",
        "status",
        "indexing",
        "chunk_sample",
        "text_preview",
        "original",
        "content_hash",
        "created_at",
        "updated_at",
    ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = DocumentIngestForm
            kwargs["fields"] = ["source", "title", "url", "file", "text", "metadata"]
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            form.base_fields["title"].required = True  # document_update refuses a blank title
        return form

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ["source", "title", "url", "file", "text", "metadata"]})]
        return [
            (None, {"fields": ["title", "source", "link", "mime_type", "status", "metadata"]}),
            ("Chunks and vectors", {"fields": ["indexing"]}),
            ("First chunks", {"fields": ["chunk_sample"], "classes": ["collapse"]}),
            ("Text", {"fields": ["text_preview"], "classes": ["collapse"]}),
            ("Record", {"fields": ["original", "content_hash", "created_at", "updated_at"], "classes": ["collapse"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.CHANGE_READONLY

    def get_queryset(self, request):
        # The text stays in the database: a list of 100 large documents would otherwise load
        # them all, and the change page shows a bounded preview (``text_preview``).
        return super().get_queryset(request).defer("text").annotate(**chunk_counts())

    def save_model(self, request, obj, form, change):
        if change:
            changes = {name: getattr(obj, name) for name in ("title", "metadata") if name in form.changed_data}
            if changes:
                document_update(document=obj, **changes)
            return
        result = form.result
        obj.pk = result.document.pk
        obj.__dict__.update({k: v for k, v in result.document.__dict__.items() if not k.startswith("_")})
        if result.deferred:
            document_read_enqueue(result.document.pk)
            messages.success(
                request, "Stored; the task worker reads its scanned pages (OCR) in the background, then indexes them."
            )
        elif not result.changed:
            messages.info(request, "Identical content was already stored; nothing changed.")
        else:
            messages.success(
                request, f"Ingested with {counted(result.chunks_added, 'new chunk')}; embedding runs in the background."
            )

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    # --- list columns ---------------------------------------------------------------------------

    @admin.display(description="title", ordering="title")
    def title_wide(self, obj):
        return with_sub(clipped(obj.title or obj.url or f"Document {obj.pk}"), obj.url)

    @admin.display(description="source", ordering="source__name")
    def source_clip(self, obj):
        return clipped(obj.source.name)

    @admin.display(description="state")
    def state(self, obj):
        if obj.status == Document.Status.FAILED:
            error = obj.error if len(obj.error) <= 100 else obj.error[:99] + "…"
            return with_sub(badge("failed", "bad"), error)
        if obj.status == Document.Status.PROCESSING:
            return badge("reading (OCR)", "busy")
        return embedding_badge(obj)

    @admin.display(description="embedded", ordering="_indexed")
    def embedded(self, obj):
        return progress(obj._indexed, obj._chunks)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj):
        return ago(obj.updated_at)

    # --- the change page (a few queries whatever the number of chunks) ---------------------------

    @admin.display(description="URL")
    def link(self, obj):
        if not obj.url:
            return "-"
        if obj.url.startswith(("http://", "https://")):
            return format_html('<a href="{}" rel="noopener noreferrer">{}</a>', obj.url, obj.url)
        return obj.url

    @admin.display(description="chunks")
    def indexing(self, obj):
        url = changelist_url(Chunk, document=obj.pk)
        return format_html("{}{}", chunk_summary(obj, chunks_url=url), last_error(obj.chunks.all()))

    @admin.display(description="chunks")
    def chunk_sample(self, obj):
        chunks = obj.chunks.order_by("ordinal").only(
            "id", "document_id", "ordinal", "text", "token_count", "index_status", "last_error"
        )[:SAMPLE_ROWS]
        rows = [
            [
                change_link(chunk, str(chunk.ordinal)),
                clipped(chunk.text),
                chunk.token_count,
                chunk_badge(chunk),
                clipped(chunk.last_error) if chunk.last_error else "",
            ]
            for chunk in chunks
        ]
        return sample_table(
            [("#", "3.5rem"), ("text", ""), ("tokens", "4.5rem"), ("state", "6.5rem"), ("error", "30%")],
            rows,
            total=obj._chunks,
            more_url=changelist_url(Chunk, document=obj.pk),
            noun="chunks",
        )

    @admin.display(description="text")
    def text_preview(self, obj):
        head, length = (
            Document.objects.filter(pk=obj.pk)
            .annotate(head=Substr("text", 1, TEXT_PREVIEW_CHARS), length=Length("text"))
            .values_list("head", "length")
            .get()
        )
        if not length:
            return "-"
        shown = (
            f"The first {TEXT_PREVIEW_CHARS:,} of {length:,} characters."
            if length > TEXT_PREVIEW_CHARS
            else f"{counted(length, 'character')}."
        )
        return format_html('<pre class="rs-text">{}</pre><p>{}</p>', head, shown)

    @admin.display(description="original file")
    def original(self, obj):
        if not obj.file_sha256:
            return "- (ingested as text or crawled)"
        return format_html(
            "{} · {} · {}<br><code>{}</code>",
            obj.file_name,
            obj.file_type,
            counted(obj.file_size, "byte"),
            obj.file_sha256,
        )

    # --- actions --------------------------------------------------------------------------------

    @admin.action(description="Re-embed selected documents")
    def reembed(self, request, queryset):
        queued, chunks, empty = reembed(queryset)
        self.message_user(request, reembed_message(queued, chunks, empty), messages.SUCCESS)

    @admin.action(description="Read failed scans again (OCR)")
    def read_again(self, request, queryset):
        again = 0
        for document in Document.objects.filter(pk__in=queryset.values("pk")).only("pk").order_by("pk"):
            if document_read_again(document=document):
                document_read_enqueue(document.pk)
                again += 1
        skipped = queryset.count() - again
        message = f"Queued {counted(again, 'document')} to be read again"
        if skipped:
            message += f"; {counted(skipped, 'document')} skipped (not a failed scan with its original kept)"
        self.message_user(request, message + ".", messages.SUCCESS if again else messages.WARNING)

    def deleted_with(self, queryset):
        return {Chunk: Chunk.objects.filter(document__in=queryset.values("pk")).count()}

    def delete_queryset(self, request, queryset):
        """Through the service (document, then its chunks, locked as every writer locks them)."""
        deleted = Counter()
        selected = Document.objects.filter(pk__in=queryset.values("pk"))
        for document in selected.only("pk").annotate(_deleting=Count("chunks")).order_by("pk"):
            if document_delete(document=document):
                deleted.update({Document: 1, Chunk: document._deleting})
        return deleted

    def delete_model(self, request, obj):
        document_delete(document=obj)

    def get_search_results(self, request, queryset, search_term):
        """Search the full-text vector (GIN-indexed), falling back to title/url matches."""
        if not search_term.strip():
            return queryset, False
        query = SearchQuery(search_term, search_type="websearch", config=SEARCH_CONFIG)
        fulltext = queryset.filter(Exists(Chunk.objects.filter(document_id=OuterRef("pk"), search_vector=query)))
        by_name = queryset.filter(Q(title__icontains=search_term) | Q(url__icontains=search_term))
        return fulltext | by_name, False


def chunk_badge(chunk: Chunk) -> str:
    if chunk.index_status == Chunk.IndexStatus.INDEXED:
        return badge("indexed", "ok")
    if chunk.index_status == Chunk.IndexStatus.PENDING:
        return badge("pending", "busy")
    return badge("failed", "bad")


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    """Chunks are read-only here: they are derived from their document's text, so they change by
    re-ingesting, re-chunking or re-embedding it, and leave with it (a chunk deleted alone leaves a
    hole in the document that search cannot see)."""

    list_display = ["ordinal_link", "document_clip", "text_wide", "state", "error_clip"]
    list_display_links = ["ordinal_link"]
    list_filter = [SourceFilter, DocumentFilter, "index_status"]
    search_fields = ["id", "text"]
    readonly_fields = [f.name for f in Chunk._meta.fields if f.name != "search_vector"]
    exclude = ["search_vector"]

    def get_queryset(self, request):
        # The document comes along for its title only: not its text (megabytes for a large one).
        return super().get_queryset(request).select_related("document").defer("document__text", "document__metadata")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="#", ordering="ordinal")
    def ordinal_link(self, obj):
        return str(obj.ordinal)

    @admin.display(description="document", ordering="document__title")
    def document_clip(self, obj):
        return change_link(obj.document)

    @admin.display(description="text")
    def text_wide(self, obj):
        return clipped(obj.text)

    @admin.display(description="state", ordering="index_status")
    def state(self, obj):
        return chunk_badge(obj)

    @admin.display(description="last error")
    def error_clip(self, obj):
        return clipped(obj.last_error) if obj.last_error else ""
