"""The API-key security scheme in the OpenAPI schema (drf-spectacular finds it by the class path)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `manage.py create_api_key`: `Authorization: Bearer <key>` "
            "(`Api-Key <key>` works too). Reading needs any key; writing a write-scoped key.",
        }
