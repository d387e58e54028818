"""Exposing the API safely: oversized bodies get a 413 before they are stored, in the API's one
error shape.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from documents.models import Document


def error_of(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"]), body
    return body["error"]


# --- Size limits --------------------------------------------------------------------------------


@pytest.fixture
def small_limits(settings):
    settings.INGEST_MAX_BYTES = 2048
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048 + 1024
    return settings


@pytest.mark.django_db
def test_a_multipart_upload_over_the_limit_is_a_413_json_error(api, small_limits):
    big = SimpleUploadedFile("big.txt", b"word " * 4000, content_type="text/plain")  # 20 000 bytes
    response = api.post("/api/documents/", {"file": big, "title": "Big"})
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "too_large" and "INGEST_MAX_BYTES" in error["message"]
    assert not Document.objects.exists()


@pytest.mark.django_db
def test_a_file_over_the_limit_in_a_small_request_is_refused_as_it_streams_in(api, small_limits):
    # the whole request fits DATA_UPLOAD_MAX_MEMORY_SIZE, the file does not fit INGEST_MAX_BYTES
    file = SimpleUploadedFile("just-over.txt", b"x" * 2500, content_type="text/plain")
    response = api.post("/api/documents/", {"file": file})
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "too_large" and "file" in error["fields"]
    # refused by the upload handler while reading, not by ingestion after the whole file arrived
    assert error["message"].startswith("The file is larger than the limit"), error["message"]
    assert not Document.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded", "multipart"])
def test_a_body_over_the_limit_is_a_413_json_error_in_every_format(api, small_limits, content_type):
    body = {"title": "Big", "text": "word " * 2000}
    if content_type == "application/json":
        response = api.post("/api/documents/", body, content_type=content_type)
    elif content_type == "multipart":
        response = api.post("/api/documents/", body)  # a large form field, no file
    else:
        from urllib.parse import urlencode

        response = api.post("/api/documents/", urlencode(body), content_type=content_type)
    assert response.status_code == 413, response.content
    assert error_of(response)["code"] == "too_large"
    assert not Document.objects.exists()


@pytest.mark.django_db
def test_too_many_form_fields_is_a_400_json_error(api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    from urllib.parse import urlencode

    form = urlencode({f"field{n}": "x" for n in range(20)})
    response = api.post("/api/sources/", form, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_request"
