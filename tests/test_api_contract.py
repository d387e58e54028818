"""The API's contract: what the schema fuzzer (tests/test_api_fuzz.py) found, pinned as plain
examples, and the schema's own completeness."""

from __future__ import annotations

import json

import pytest

# --- What the fuzzer found --------------------------------------------------------------------


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"]), body
    return body["error"]


@pytest.mark.django_db
def test_a_date_filter_with_an_impossible_utc_offset_is_a_400_not_a_500(api):
    response = api.get("/api/documents/", {"created_after": "0232-08-07T05:59:44-21:41"})
    assert response.status_code == 400, response.content
    assert "created_after" in error_of(response)["fields"]
    assert api.get("/api/documents/", {"created_after": "2024-01-01T00:00:00+14:00"}).status_code == 200


@pytest.fixture
def openapi(client):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_blank_urls_are_documented_as_strings_not_uris(openapi):
    # a document without a URL answers "url": "", which `format: uri` rejects
    schemas = openapi["components"]["schemas"]
    for name, field in [("Document", "url"), ("IngestResponse", "url"), ("Source", "base_url")]:
        assert "format" not in json.dumps(schemas[name]["properties"][field]), (name, field)


def test_reembed_documents_the_202_it_answers(openapi):
    assert "202" in openapi["paths"]["/api/documents/{id}/reembed/"]["post"]["responses"]


@pytest.mark.django_db
def test_a_new_source_answers_with_its_document_count(api):
    response = api.post("/api/sources/", {"name": "fresh"}, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["document_count"] == 0


def documented_media_types(openapi, path: str, method: str, status: str) -> set[str]:
    return set(openapi["paths"][path][method]["responses"][status].get("content", {}))


@pytest.mark.django_db
def test_every_content_type_ask_answers_with_is_documented(api, openapi):
    for stream in (False, True):
        response = api.post("/api/ask/", {"question": "How is tea made?", "stream": stream},
                            content_type="application/json")
        assert response.status_code == 200, response
        media_type = response["Content-Type"].split(";")[0]
        assert media_type in documented_media_types(openapi, "/api/ask/", "post", "200"), (stream, media_type)
