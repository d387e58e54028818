"""API keys: who may call the REST API, and with which scope."""

from __future__ import annotations

from django.db import models


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
        "auth.User",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="api_keys",
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
