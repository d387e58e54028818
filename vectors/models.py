"""The vectors app's own table: the embedding cache."""

from __future__ import annotations

from django.db import models


class EmbeddingCache(models.Model):
    """Vectors by (model, text hash): identical text is never embedded twice by one model."""

    model = models.CharField(max_length=200)
    content_hash = models.CharField(max_length=64)
    dimension = models.PositiveIntegerField()
    vector = models.BinaryField()  # float32, little-endian
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "content_hash"], name="embedding_cache_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.model}:{self.content_hash[:12]}"
