"""Shared REST API plumbing: one error shape everywhere, pagination, throttles.

Every error, from validation to a 404 or an unexpected crash, answers
``{"error": {"code": ..., "message": ..., "fields": {...}}}``.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, JsonResponse
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _messages(detail, where: str = "") -> list[str]:
    """Every message in a (nested) DRF error detail, prefixed with where it applies: a list
    field's item errors arrive as ``{0: [...]}``, whose repr must not reach the client."""
    if isinstance(detail, dict):
        return [m for key, sub in detail.items() for m in _messages(sub, f"{where}[{key}]")]
    if isinstance(detail, list):
        return [m for sub in detail for m in _messages(sub, where)]
    return [f"{where}: {detail}" if where else str(detail)]


def _flatten(detail) -> dict:
    if isinstance(detail, dict):
        return {str(k): _messages(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return {"non_field_errors": _messages(detail)}
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
    return JsonResponse(
        error_body("server_error", "The server failed to handle this request; it has been logged."), status=500
    )


# --- Bounded input -------------------------------------------------------------------------------

# PostgreSQL's bigint: an id beyond it names no row, and the database (or the vector engine's
# 64-bit filters) would answer it with an error instead of "no such object".
MAX_ID = 2**63 - 1
# Deep enough for any body this API takes (metadata is limited to 8 levels by the ingest service),
# far from Python's recursion limit, which json and DRF's fields reach at ~1,000 levels.
JSON_MAX_DEPTH = 64


def object_id(value: str) -> int | None:
    """The id in a user's string (an object's id or name, a filter), or None when it is not one.

    ASCII digits only: ``str.isdigit`` is true for "²" or "٣", which int() refuses or reads.
    """
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if 0 < number <= MAX_ID else None


def json_depth_error(data) -> tuple[str, str] | None:
    """(field, message) when ``data`` nests deeper than JSON_MAX_DEPTH; the field is the body's
    top-level key that holds the deep part, or ``body``. Iterative, so depth cannot crash it."""
    top = data if isinstance(data, dict) else {"body": data}
    stack = [(value, key, 2) for key, value in top.items() if isinstance(value, dict | list)]
    while stack:
        node, field, depth = stack.pop()
        if depth > JSON_MAX_DEPTH:
            return str(field), f"{field} nests too deeply: the request body may nest {JSON_MAX_DEPTH} levels at most."
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, field, depth + 1) for child in children if isinstance(child, dict | list))
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, bounded in depth: ~1,000 levels of ``[`` raised RecursionError (a 500)
    in the parser or, a little less deep, in the fields that walk the data afterwards."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            message = f"The JSON body nests too deeply: it may nest {JSON_MAX_DEPTH} levels at most."
            raise ApiError(message, field="body", code="parse_error") from None
        problem = json_depth_error(data)
        if problem:
            raise ApiError(problem[1], field=problem[0], code="parse_error")
        return data


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.JSONField):
    """A JSON object (metadata): its form-data string (multipart, urlencoded) is parsed without
    crashing when it nests past the recursion limit. Whether it is an object, and its limits,
    are the ingest service's to check (documents.services.metadata_check)."""

    default_error_messages = {"too_deep": f"Nests too deeply: {JSON_MAX_DEPTH} levels of objects and arrays at most."}

    def to_internal_value(self, data):
        try:
            value = super().to_internal_value(data)
        except RecursionError:
            self.fail("too_deep")
        if json_depth_error({"value": value}):
            self.fail("too_deep")
        return value


class Pagination(LimitOffsetPagination):
    default_limit = 20
    max_limit = 200


class AnonIpRateThrottle(SimpleRateThrottle):
    scope = "anon"

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
