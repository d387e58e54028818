from __future__ import annotations

from django.contrib import admin
from django.contrib.postgres.search import SearchQuery
from django.db.models import Count, Q

from documents.models import SEARCH_CONFIG, Chunk, Document, EmbeddingCache, Source


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "base_url", "document_count", "chunks_pending", "chunks_indexed", "chunks_failed", "updated_at"]
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
    fields = ["ordinal", "short_text", "token_count", "heading_path", "index_status", "indexed_at", "last_error"]
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


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "source", "url", "mime_type", "status", "chunk_count", "updated_at"]
    list_filter = ["status", "source", "mime_type"]
    list_select_related = ["source"]
    search_fields = ["title", "url"]
    readonly_fields = ["content_hash", "created_at", "updated_at"]
    exclude = ["search_vector"]
    inlines = [ChunkInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_chunks=Count("chunks"))

    @admin.display(description="chunks", ordering="_chunks")
    def chunk_count(self, obj):
        return obj._chunks

    def get_search_results(self, request, queryset, search_term):
        """Search the full-text vector (GIN-indexed), falling back to title/url matches."""
        if not search_term.strip():
            return queryset, False
        query = SearchQuery(search_term, search_type="websearch", config=SEARCH_CONFIG)
        fulltext = queryset.filter(search_vector=query)
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


@admin.register(EmbeddingCache)
class EmbeddingCacheAdmin(admin.ModelAdmin):
    list_display = ["model", "content_hash", "dimension", "created_at"]
    list_filter = ["model"]
    search_fields = ["content_hash"]
    readonly_fields = ["model", "content_hash", "dimension", "created_at"]
    exclude = ["vector"]

    def has_add_permission(self, request):
        return False
