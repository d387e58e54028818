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
        response = api.post(
            "/api/ask/", {"question": "How is tea made?", "stream": stream}, content_type="application/json"
        )
        assert response.status_code == 200, response
        media_type = response["Content-Type"].split(";")[0]
        assert media_type in documented_media_types(openapi, "/api/ask/", "post", "200"), (stream, media_type)
    # and each event is what the event-stream schema describes
    event_schema = openapi["paths"]["/api/ask/"]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    body = b"".join(response.streaming_content).decode()
    events = [line.removeprefix("event:").strip() for line in body.splitlines() if line.startswith("event:")]
    datas = [line.removeprefix("data:").strip() for line in body.splitlines() if line.startswith("data:")]
    assert events and set(events) <= set(event_schema["properties"]["event"]["enum"]), events
    assert all(isinstance(json.loads(data), dict) for data in datas)


# --- The schema itself ---------------------------------------------------------------------------

HTTP_METHODS = {"get", "put", "post", "patch", "delete"}


def operations(openapi):
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield f"{method.upper()} {path}", operation


def test_schema_and_swagger_ui_answer(client):
    assert client.get("/api/schema/").status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content


def test_the_schema_is_valid_openapi_3(openapi):
    from drf_spectacular.validation import validate_schema

    assert openapi["openapi"].startswith("3.")
    validate_schema(openapi)  # raises on any violation of the OpenAPI 3 JSON schema


def test_every_operation_and_parameter_is_described(openapi):
    undescribed = []
    for name, operation in operations(openapi):
        if not operation.get("summary") or not operation.get("description"):
            undescribed.append(name)
        undescribed += [f"{name} ?{p['name']}" for p in operation.get("parameters", []) if not p.get("description")]
    assert not undescribed, "\n".join(undescribed)


def test_every_request_and_response_body_has_an_example(openapi):
    missing = []
    for name, operation in operations(openapi):
        bodies = [("request", c) for c in operation.get("requestBody", {}).get("content", {}).values()]
        bodies += [(code, c) for code, r in operation["responses"].items() for c in r.get("content", {}).values()]
        # one example per body kind is enough: a JSON example also shows the multipart fields
        by_kind: dict[str, bool] = {}
        for kind, content in bodies:
            if content.get("schema", {}).get("format") == "binary":
                continue  # a file's bytes (the original of a document): no example to show
            by_kind[kind] = by_kind.get(kind, False) or bool(content.get("examples") or content.get("example"))
        missing += [f"{name} {kind}" for kind, has in by_kind.items() if not has]
    assert not missing, "\n".join(missing)


def test_every_operation_documents_its_errors_in_the_error_shape(openapi):
    problems = []
    for name, operation in operations(openapi):
        responses = operation["responses"]
        expected = {"401", "403", "429"}
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            expected.add("404")
        if operation.get("requestBody"):
            expected |= {"400", "413"}
        for code in sorted(expected):
            schema = responses.get(code, {}).get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref") != "#/components/schemas/Error":
                problems.append(f"{name} {code}")
    assert not problems, "\n".join(problems)
    error = openapi["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message", "fields"}


def json_schema(node):
    """OpenAPI 3.0's schema dialect to JSON Schema: `nullable: true` becomes a null alternative."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def test_every_documented_example_matches_its_schema(openapi):
    import jsonschema

    components = json_schema(openapi["components"])
    wrong = []
    for name, operation in operations(openapi):
        bodies = [("request", c) for c in operation.get("requestBody", {}).get("content", {}).values()]
        bodies += [(code, c) for code, r in operation["responses"].items() for c in r.get("content", {}).values()]
        for kind, content in bodies:
            schema = {**json_schema(content.get("schema", {})), "components": components}
            for title, example in (content.get("examples") or {}).items():
                try:
                    jsonschema.validate(example["value"], schema)
                except jsonschema.ValidationError as exc:
                    wrong.append(f"{name} {kind} {title!r}: {exc.message}")
    assert not wrong, "\n".join(wrong)
