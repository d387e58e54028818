"""The OpenAPI schema's shared parts: the error shape on every operation (the API-key scheme is
accounts.openapi's).

A module of its own, not part of ``ragsite.api``: drf-spectacular's AutoSchema imports DRF's
APIView, whose class body loads the throttle classes from ``ragsite.api``.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers

from ragsite.api import error_body


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="Machine-readable: invalid, parse_error, not_found, not_authenticated, authentication_failed, "
        "permission_denied, throttled, too_large, unsupported_media_type, semantic_unavailable, ..."
    )
    message = serializers.CharField(help_text="Human-readable; names the field at fault when there is one.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Field name -> messages, for input errors; empty otherwise.",
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


ERROR_RESPONSES = {
    "400": (
        "Invalid input: `error.fields` names each field at fault.",
        error_body(
            "invalid",
            "title: Ensure this field has no more than 1000 characters.",
            {"title": ["Ensure this field has no more than 1000 characters."]},
        ),
    ),
    "401": (
        "No credentials, or an unknown or revoked API key.",
        error_body("not_authenticated", "Authentication credentials were not provided."),
    ),
    "403": (
        "Authenticated, but not allowed: writing needs a write-scoped key or a staff user.",
        error_body("permission_denied", "This needs a write-scoped API key or a staff user."),
    ),
    "404": ("No object with this id.", error_body("not_found", "No Document matches the given query.")),
    "413": (
        "The request body or the document is larger than INGEST_MAX_BYTES.",
        error_body("too_large", "The content is larger than INGEST_MAX_BYTES (20971520 bytes)."),
    ),
    "415": (
        "The Content-Type of the request body is not accepted here.",
        error_body("unsupported_media_type", 'Unsupported media type "text/csv" in request.'),
    ),
    "429": (
        "Too many requests for this key (THROTTLE_KEY) or address (THROTTLE_ANON); "
        "retry after the Retry-After header's seconds.",
        error_body("throttled", "Request was throttled. Expected available in 12 seconds."),
    ),
    "502": (
        "The language model failed or refused the credentials (llm_unavailable, llm_auth_failed).",
        error_body("llm_unavailable", "The language model answered with an error."),
    ),
    "503": (
        "A backing service (the vector store, the embedder, a rate-limited language model, the store of "
        "original files) is unavailable; retry later.",
        error_body("semantic_unavailable", "The vector store is unavailable: check QDRANT_URL."),
    ),
    "504": (
        "The language model did not answer within OPENAI_TIMEOUT (llm_timeout).",
        error_body("llm_timeout", "The language model did not answer in time."),
    ),
}
BODY_METHODS = {"POST", "PUT", "PATCH"}


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's schema, plus the error responses every operation can give.

    The errors follow from how the operation is reached, so they are derived here instead of
    being repeated on every view: 401/403/429 everywhere (authentication, scopes, throttles),
    400 wherever input is read (a body or query parameters), 404 with a path parameter,
    413/415 with a request body. A view adds others (e.g. 503) with ``error_statuses``.
    """

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        parameters = operation.get("parameters", [])
        codes = {"401", "403", "429"}
        if operation.get("requestBody") or any(p.get("in") == "query" for p in parameters):
            codes.add("400")
        if any(p.get("in") == "path" for p in parameters):
            codes.add("404")
        if self.method in BODY_METHODS and operation.get("requestBody"):
            codes |= {"413", "415"}
        codes |= {str(code) for code in getattr(self.view, "error_statuses", ())}
        responses = operation.setdefault("responses", {})
        for code in sorted(codes):
            if code in responses:
                continue
            description, example = ERROR_RESPONSES[code]
            response = self._get_response_for_code(
                OpenApiResponse(ErrorSerializer, description=description), code, direction="response"
            )
            for content in response.get("content", {}).values():
                content["examples"] = {code: {"value": example, "summary": description.split(":")[0]}}
            if code == "429":
                response["headers"] = {
                    "Retry-After": {
                        "schema": {"type": "integer"},
                        "description": "Seconds until the next request is allowed.",
                    }
                }
            responses[code] = response
        return operation

    def get_auth(self):
        # drf-spectacular adds the SECURITY setting after the view's own schemes: drop repeats.
        auths = []
        for requirement in super().get_auth():
            if requirement not in auths:
                auths.append(requirement)
        if (
            settings.SEARCH_PUBLIC
            and (self.method in permissions.SAFE_METHODS or getattr(self.view, "read_only_post", False))
            and {} not in auths
        ):
            auths.append({})  # ReadOrWrite lets anyone read when SEARCH_PUBLIC is on
        return auths
