"""API-key authentication and the permission rules of the REST API.

Keys travel as ``Authorization: Bearer <key>`` (or ``Api-Key <key>``). Reading and searching
need any valid key or a logged-in user (or nothing, with SEARCH_PUBLIC=true); writing needs a
write-scoped key or a staff user.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import ApiKey
from ragsite.security import BadKeyThrottle

KEY_PREFIX = "rs_"
LAST_USED_RESOLUTION = 60  # seconds: do not write last_used_at on every request


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def api_key_create(*, name: str, scope: str = ApiKey.Scope.READ, user=None) -> tuple[ApiKey, str]:
    """Create a key; returns (row, the plain key). The plain key is not stored anywhere."""
    if scope not in ApiKey.Scope.values:
        raise ValueError(f"scope must be one of {', '.join(ApiKey.Scope.values)}")
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.objects.create(name=name, prefix=plain[:10], key_hash=_hash(plain), scope=scope, user=user)
    return row, plain


def api_key_revoke(*, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


@dataclass
class ApiKeyUser(AnonymousUser):
    """The request.user of a key-authenticated request (not a Django user)."""

    api_key: ApiKey | None = None

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"api-key:{self.api_key.prefix}"

    def __hash__(self) -> int:
        return hash(self.api_key.pk)


def _key_by_hash(key_hash: str) -> ApiKey | None:
    """The key row with this hash, by one plain indexed SELECT.

    Runs on every API request, so not through the ORM: compiling
    ``filter(...).select_related("user").first()`` cost ~0.7 ms of Python per request, more than
    the query itself. The user (most keys have none) is loaded lazily by ``key.user``.
    """
    columns = [field.column for field in ApiKey._meta.concrete_fields]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(ApiKey._meta.db_table)} WHERE "
            f"{quote('key_hash')} = %s",
            [key_hash],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return ApiKey.from_db(connection.alias, [field.attname for field in ApiKey._meta.concrete_fields], row)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keywords = ("bearer", "api-key")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0].lower() not in self.keywords:
            return None
        guard = BadKeyThrottle()
        guard.check(request)
        if len(parts) != 2:
            guard.record_failure(request)
            raise exceptions.AuthenticationFailed("Malformed Authorization header: expected 'Bearer <key>'.")
        key = _key_by_hash(_hash(parts[1]))
        if key is None or not key.is_active:
            guard.record_failure(request)
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        now = timezone.now()
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        user = key.user if key.user_id is not None and key.user.is_active else ApiKeyUser(api_key=key)
        return (user, key)

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


def request_can_write(request) -> bool:
    if isinstance(request.auth, ApiKey):
        return request.auth.can_write
    user = request.user
    return bool(user and user.is_authenticated and user.is_staff)


class ReadOrWrite(permissions.BasePermission):
    """Safe methods: any authenticated caller (or anyone if SEARCH_PUBLIC). Others: write scope."""

    message = "This needs a write-scoped API key or a staff user."

    def has_permission(self, request, view):
        if request.method in permissions.SAFE_METHODS or getattr(view, "read_only_post", False):
            return settings.SEARCH_PUBLIC or bool(request.user and request.user.is_authenticated)
        if not (request.user and request.user.is_authenticated):
            return False
        return request_can_write(request)


class KeyRateThrottle(SimpleRateThrottle):
    """Per API key (or per user) for authenticated callers; per client IP for anonymous ones."""

    scope = "key"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            return None  # AnonRateThrottle handles these
        return self.cache_format % {"scope": self.scope, "ident": ident}
