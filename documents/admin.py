from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.postgres.search import SearchQuery
from django.db import models
from django.db.models import Count, Exists, OuterRef, Q
from django.forms.fields import InvalidJSONInput

from documents.models import SEARCH_CONFIG, Chunk, Document, Source
from documents.services import IngestError, document_ingest, document_reembed, document_update, metadata_check


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


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    formfield_overrides = METADATA_FORM_FIELD
    list_display = [
        "name",
        "kind",
        "base_url",
        "document_count",
        "chunks_pending",
        "chunks_indexed",
        "chunks_failed",
        "updated_at",
    ]
    list_filter = ["kind"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["created_at", "updated_at"]

    def get_queryset(self, request):
        chunk_status = "documents__chunks__index_status"
        return (
            super()
            .get_queryset(request)
            .annotate(
                _documents=Count("documents", distinct=True),
                _pending=Count("documents__chunks", filter=Q(**{chunk_status: Chunk.IndexStatus.PENDING})),
                _indexed=Count("documents__chunks", filter=Q(**{chunk_status: Chunk.IndexStatus.INDEXED})),
                _failed=Count("documents__chunks", filter=Q(**{chunk_status: Chunk.IndexStatus.FAILED})),
            )
        )

    @admin.display(description="documents", ordering="_documents")
    def document_count(self, obj):
        return obj._documents

    @admin.display(description="chunks pending", ordering="_pending")
    def chunks_pending(self, obj):
        return obj._pending

    @admin.display(description="chunks indexed", ordering="_indexed")
    def chunks_indexed(self, obj):
        return obj._indexed

    @admin.display(description="chunks failed", ordering="_failed")
    def chunks_failed(self, obj):
        return obj._failed


class ChunkInline(admin.TabularInline):
    model = Chunk
    fields = [
        "ordinal",
        "short_text",
        "token_count",
        "heading_path",
        "index_status",
        "indexed_at",
        "sync_attempts",
        "last_error",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["ordinal"]

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:200] + ("…" if len(obj.text) > 200 else "")


class DocumentIngestForm(forms.ModelForm):
    """Add a document by uploading a file or pasting text; ingestion runs in clean()."""

    file = forms.FileField(required=False, help_text="Text, Markdown, HTML or PDF.")
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
            )
        except IngestError as exc:
            field = exc.field if exc.field in self.fields else ("file" if upload else "text")
            self.add_error(field, exc.message)
        return cleaned


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "source", "url", "mime_type", "status", "chunk_count", "vectors", "updated_at"]
    list_filter = ["status", "source", "mime_type"]
    list_select_related = ["source"]
    search_fields = ["title", "url"]
    readonly_fields = ["content_hash", "created_at", "updated_at"]
    inlines = [ChunkInline]
    actions = ["reembed", "delete_selected"]
    formfield_overrides = METADATA_FORM_FIELD

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
        return super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        # A stored document changes its title and metadata through the update service (which
        # re-syncs its chunks' payloads); its source, URL and text only by ingesting it again.
        return [] if obj is None else [*self.readonly_fields, "source", "url", "text", "mime_type", "status"]

    def get_inlines(self, request, obj):
        return [] if obj is None else self.inlines

    def save_model(self, request, obj, form, change):
        if change:
            changes = {name: getattr(obj, name) for name in ("title", "metadata") if name in form.changed_data}
            if changes:
                document_update(document=obj, **changes)
            return
        result = form.result
        obj.pk = result.document.pk
        obj.__dict__.update({k: v for k, v in result.document.__dict__.items() if not k.startswith("_")})
        if not result.changed:
            messages.info(request, "Identical content was already stored; nothing changed.")
        else:
            messages.success(
                request, f"Ingested with {result.chunks_added} new chunks; embedding runs in the background."
            )

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    @admin.action(description="Re-embed selected documents")
    def reembed(self, request, queryset):
        total = sum(document_reembed(document=doc) for doc in queryset)
        self.message_user(request, f"{total} chunks queued for embedding.", messages.SUCCESS)

    def get_queryset(self, request):
        failed = Q(chunks__index_status=Chunk.IndexStatus.FAILED)
        return (
            super()
            .get_queryset(request)
            .annotate(
                _chunks=Count("chunks"),
                _pending=Count("chunks", filter=Q(chunks__index_status=Chunk.IndexStatus.PENDING)),
                _failed=Count("chunks", filter=failed),
                _quarantined=Count(
                    "chunks", filter=failed & Q(chunks__sync_attempts__gte=settings.VECTORS_SYNC_MAX_ATTEMPTS)
                ),
            )
        )

    @admin.display(description="chunks", ordering="_chunks")
    def chunk_count(self, obj):
        return obj._chunks

    @admin.display(description="vectors")
    def vectors(self, obj):
        """Quarantined (vectors.quarantine: repeated sync failures; re-embed to retry), failed, pending or indexed."""
        if getattr(obj, "_quarantined", 0):
            return f"quarantined ({obj._quarantined} chunks)"
        if getattr(obj, "_failed", 0):
            return f"{obj._failed} failed"
        if getattr(obj, "_pending", 0):
            return f"{obj._pending} pending"
        return "indexed"

    def get_search_results(self, request, queryset, search_term):
        """Search the full-text vector (GIN-indexed), falling back to title/url matches."""
        if not search_term.strip():
            return queryset, False
        query = SearchQuery(search_term, search_type="websearch", config=SEARCH_CONFIG)
        fulltext = queryset.filter(Exists(Chunk.objects.filter(document_id=OuterRef("pk"), search_vector=query)))
        by_name = queryset.filter(Q(title__icontains=search_term) | Q(url__icontains=search_term))
        return fulltext | by_name, False


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ["__str__", "document", "ordinal", "token_count", "index_status", "indexed_at"]
    list_filter = ["index_status"]
    list_select_related = ["document"]
    search_fields = ["id", "text"]
    readonly_fields = [f.name for f in Chunk._meta.fields if f.name != "search_vector"]
    exclude = ["search_vector"]

    def has_add_permission(self, request):
        return False
