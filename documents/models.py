"""Sources, documents and chunks: the truth that every search index is rebuilt from."""

from __future__ import annotations

import uuid

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import JSONField, Q, Value

SEARCH_CONFIG = "english"


class Source(models.Model):
    class Kind(models.TextChoices):
        UPLOAD = "upload", "Upload"
        CRAWL = "crawl", "Website crawl"
        API = "api", "API"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.UPLOAD)
    base_url = models.URLField(max_length=2000, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Document(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        # An upload that needs OCR, waiting for the task worker to read it (documents.tasks). A new
        # one has no chunks yet, so no search finds it; a re-sent one keeps its previous text.
        PROCESSING = "processing", "Processing"
        # Its file could not be read in the background; why is in ``error``.
        FAILED = "failed", "Failed"

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=1000, blank=True)
    url = models.URLField(max_length=2000, blank=True)
    mime_type = models.CharField(max_length=200, blank=True)
    text = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Why the document is FAILED, in a sentence fit for its uploader; empty otherwise.
    # Database defaults too: rows inserted by plain SQL (bulk loads, benches) need not name these.
    error = models.TextField(blank=True, default="", db_default="")
    # While PROCESSING or FAILED: what the upload asked for (title, metadata, declared type, file
    # name) so the worker can read it, and how far it got ("pages", "pages_read", "attempts").
    # Emptied once the document is stored.
    reading = models.JSONField(default=dict, blank=True, db_default=Value({}, output_field=JSONField()))
    # The uploaded original (documents.files): its SHA-256 names the file on disk; empty when
    # the document came as text or from a crawl.
    file_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    file_name = models.CharField(max_length=255, blank=True)
    file_type = models.CharField(max_length=200, blank=True)
    file_size = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # No document-level search vector: full-text search reads the chunks' vectors (which carry the
    # title in their context). A vector over the whole text duplicated them and failed PostgreSQL's
    # 1 MB tsvector limit on large documents (a 6.3 MB log, 100k Markdown headings), so those
    # could not be stored at all.

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [
            models.Index(fields=["source", "-updated_at"], name="document_source_updated"),
            # The few documents still being read or failed, found at each worker start (documents.tasks).
            models.Index(fields=["status"], condition=~Q(status="active"), name="document_not_active"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["source", "url"], condition=~Q(url=""), name="document_unique_source_url"),
        ]

    def __str__(self) -> str:
        return self.title or self.url or f"Document {self.pk}"


class ChunkManager(models.Manager):
    def get_queryset(self):
        # The search vector is for PostgreSQL to match and rank, never read in Python; loaded, it
        # is ~twice the chunk's text again (its text form) on every chunk a query returns.
        return super().get_queryset().defer("search_vector")


class Chunk(models.Model):
    class IndexStatus(models.TextChoices):
        PENDING = "pending", "Pending"
        INDEXED = "indexed", "Indexed"
        FAILED = "failed", "Failed"

    # The chunk's UUID is also its Qdrant point id.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    # Document title and heading path, denormalised so the chunk's own search vector can weigh
    # them like a title (a generated column cannot read another table).
    context = models.TextField(blank=True)
    token_count = models.PositiveIntegerField(default=0)
    char_start = models.PositiveIntegerField(default=0)
    char_end = models.PositiveIntegerField(default=0)
    heading_path = models.JSONField(default=list, blank=True)
    content_hash = models.CharField(max_length=64, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    index_status = models.CharField(
        max_length=16, choices=IndexStatus.choices, default=IndexStatus.PENDING, db_index=True
    )
    indexed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Syncs that took this chunk without indexing it, counted before the work so that a crash
    # counts too; reset when it is indexed. At VECTORS_SYNC_MAX_ATTEMPTS its document is
    # quarantined (vectors.quarantine): failed, and not retried until re-ingested or re-embedded.
    sync_attempts = models.PositiveIntegerField(default=0)
    sync_retry_at = models.DateTimeField(null=True, blank=True)  # a failed chunk's next automatic retry
    created_at = models.DateTimeField(auto_now_add=True)
    # Bounded because a chunk is (documents.chunking: characters of text, heading path) and so is
    # a title (1000 characters): far below the 1 MB a tsvector may hold.
    search_vector = models.GeneratedField(
        expression=SearchVector("context", weight="A", config=SEARCH_CONFIG)
        + SearchVector("text", weight="B", config=SEARCH_CONFIG),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    objects = ChunkManager()

    class Meta:
        ordering = ["document_id", "ordinal"]
        indexes = [GinIndex(fields=["search_vector"], name="chunk_search_vector_gin")]
        constraints = [
            # Deferred so re-chunking can shift ordinals in one transaction without collisions.
            models.UniqueConstraint(
                fields=["document", "ordinal"],
                name="chunk_unique_document_ordinal",
                deferrable=models.Deferrable.DEFERRED,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"
