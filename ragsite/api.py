"""Shared REST API plumbing: one error shape everywhere, pagination, throttles.

Every error, from validation to a 404 or an unexpected crash, answers
``{"error": {"code": ..., "message": ..., "fields": {...}}}``.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _flatten(detail) -> dict:
    if isinstance(detail, dict):
        return {str(k): [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in detail.items()}
    if isinstance(detail, list):
        return {"non_field_errors": [str(m) for m in detail]}
    return {}


class ApiError(exceptions.APIException):
    """An API error with a code and an optional field, raised by views and services' adapters."""

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid", status_code: int = 400):
        super().__init__(message, code)
        self.status_code = status_code
        self.field = field
        self.error_code = code


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, RequestDataTooBig):
        # Django raises it while DRF reads the body (JSON, forms: DATA_UPLOAD_MAX_MEMORY_SIZE) or
        # a multipart upload streams in (ragsite.uploads): the client's fault, not a crash.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        message = getattr(exc, "message", "") or (
            f"The request body is larger than the limit of {limit} bytes "
            f"(INGEST_MAX_BYTES={settings.INGEST_MAX_BYTES} for the content, plus room for the fields)."
        )
        field = getattr(exc, "field", "")
        return Response(
            error_body("too_large", message, {field: [message]} if field else None),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):
        # e.g. TooManyFieldsSent, TooManyFilesSent: Django answers these with 400 outside DRF
        return Response(error_body("bad_request", str(exc) or "Malformed request."), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ApiError):
        fields = {exc.field: [str(exc.detail)]} if exc.field else {}
        return Response(error_body(exc.error_code, str(exc.detail), fields), status=exc.status_code)
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled API error", exc_info=exc)
        return Response(
            error_body("server_error", "The server failed to handle this request; it has been logged."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        first_field, messages = next(iter(fields.items()), ("", [""]))
        message = f"{first_field}: {messages[0]}" if first_field and first_field != "non_field_errors" else messages[0]
        response.data = error_body("invalid", message or "Invalid input.", fields)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        code = code if isinstance(code, str) else "error"
        response.data = error_body(code, str(detail))
    return response


def json_404(request, exception=None):
    return JsonResponse(error_body("not_found", f"No such URL: {request.path}"), status=404)


def json_500(request):
    return JsonResponse(error_body("server_error", "The server failed to handle this request; it has been logged."), status=500)


class Pagination(LimitOffsetPagination):
    default_limit = 20
    max_limit = 200


class AnonIpRateThrottle(SimpleRateThrottle):
    scope = "anon"

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
