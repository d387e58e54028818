"""Who is calling a tool: an API key's identity and scope, the same keys as the REST API.

Over HTTP the key arrives as ``Authorization: Bearer <key>`` and is checked by the REST API's own
authentication class; over stdio it comes from ``--key`` or ``RAGSITE_API_KEY``. Either way the
caller is kept in a context variable, which the SDK's tasks and worker threads inherit, so a tool
reads it without being handed it.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from django.http import HttpRequest
from rest_framework.exceptions import AuthenticationFailed

from accounts.auth import ApiKeyAuthentication
from accounts.models import ApiKey


@dataclass(frozen=True)
class Principal:
    key_id: int
    label: str
    can_write: bool
    key: ApiKey | None = None
    user: object | None = None


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("mcp_principal", default=None)


class KeyRefused(Exception):
    """No key, or one that is unknown or revoked; the message says which."""


def principal_from_request(request: HttpRequest) -> Principal:
    """The caller of a request, by the REST API's own key authentication. Raises KeyRefused."""
    try:
        found = ApiKeyAuthentication().authenticate(request)
    except AuthenticationFailed as exc:
        raise KeyRefused(str(exc.detail)) from None
    if found is None:
        raise KeyRefused("An API key is required: send 'Authorization: Bearer <key>'.")
    user, key = found
    return Principal(key_id=key.pk, label=f"{key.name} ({key.prefix}…)", can_write=key.can_write, key=key, user=user)


def principal_from_key(plain: str) -> Principal:
    """The caller of a stdio session: the plain key given on the command line or in the environment."""
    request = HttpRequest()
    request.META["HTTP_AUTHORIZATION"] = f"Bearer {plain.strip()}"
    return principal_from_request(request)
