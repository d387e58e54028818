"""Sources, documents and chunks: the truth that every search index is rebuilt from."""

from __future__ import annotations

import uuid

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import Q

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
        FAILED = "failed", "Failed"

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=1000, blank=True)
    url = models.URLField(max_length=2000, blank=True)
    mime_type = models.CharField(max_length=200, blank=True)
    text = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Computed by PostgreSQL on every write, so it can never lag behind the row.
    search_vector = models.GeneratedField(
        expression=SearchVector("title", weight="A", config=SEARCH_CONFIG)
        + SearchVector("text", weight="B", config=SEARCH_CONFIG),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [
            GinIndex(fields=["search_vector"], name="document_search_vector_gin"),
            models.Index(fields=["source", "-updated_at"], name="document_source_updated"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "url"], condition=~Q(url=""), name="document_unique_source_url"
            ),
        ]

    def __str__(self) -> str:
        return self.title or self.url or f"Document {self.pk}"


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
    search_vector = models.GeneratedField(
        expression=SearchVector("context", weight="A", config=SEARCH_CONFIG)
        + SearchVector("text", weight="B", config=SEARCH_CONFIG),
        output_field=SearchVectorField(),
        db_persist=True,
    )

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


class ApiKey(models.Model):
    """An API key: only its SHA-256 is stored; the key itself is shown once at creation."""

    class Scope(models.TextChoices):
        READ = "read", "Read (list, retrieve, search, ask)"
        WRITE = "write", "Read and write"

    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=12, db_index=True, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    user = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="api_keys",
        help_text="Optional: the person responsible for this key.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.WRITE
