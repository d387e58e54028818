"""Bad input through every entry point: refused with a 4xx naming the field (or a clear command
error), never a 500, and nothing stored before is lost. Real PostgreSQL and the real vector store.
"""

from __future__ import annotations

import json
import logging
import os
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from documents.models import Chunk, Document, Source
from documents.services import (
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    METADATA_MAX_KEY_CHARS,
    METADATA_MAX_KEYS,
    document_ingest,
    source_get_or_create,
)

pytestmark = pytest.mark.django_db

TEXT = "Green tea is steamed soon after picking; black tea is fully oxidised."


def nested(levels: int) -> dict:
    """``{"a": {"a": ...}}``: ``levels`` objects deep, the outermost included."""
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def error_of(response, status: int = 400) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"]), body
    return body["error"]


def post_json(api, path: str, body, method: str = "post"):
    data = body if isinstance(body, str) else json.dumps(body)
    return getattr(api, method)(path, data, content_type="application/json")


@pytest.fixture
def stored(api, fresh_store, run_commit_hooks):
    """One document, indexed, whose metadata the tests try to overwrite."""
    with run_commit_hooks():
        response = post_json(api, "/api/documents/", {"title": "Tea", "text": TEXT, "metadata": {"lang": "en"}})
    assert response.status_code == 201, response.content
    return Document.objects.get(pk=response.json()["id"])


# --- Metadata: one check in the ingest service, for every entry point -----------------------------


def test_metadata_nested_130_levels_is_refused_and_nothing_is_stored(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        response = post_json(api, "/api/documents/", {"title": "Deep", "text": TEXT, "metadata": nested(130)})
    assert "metadata" in error_of(response)["fields"]
    assert not Document.objects.exists() and not Chunk.objects.exists()
    assert fresh_store.count() == 0
    # and semantic search still answers for everyone
    assert api.get("/api/search/", {"q": "tea", "mode": "semantic"}).status_code == 200


def test_patching_metadata_nested_130_levels_is_refused_and_keeps_the_old_metadata(api, stored, run_commit_hooks):
    with run_commit_hooks():
        response = post_json(api, f"/api/documents/{stored.pk}/", {"metadata": nested(130)}, method="patch")
    assert "metadata" in error_of(response)["fields"]
    stored.refresh_from_db()
    assert stored.metadata == {"lang": "en"}
    assert api.get("/api/search/", {"q": "tea", "mode": "semantic"}).json()["count"] == 1


def test_a_source_with_metadata_nested_130_levels_is_refused(api):
    source = Source.objects.create(name="kept", metadata={"team": "a"})
    for method, path in [
        ("post", "/api/sources/"),
        ("patch", f"/api/sources/{source.pk}/"),
        ("put", f"/api/sources/{source.pk}/"),
    ]:
        for metadata in [nested(130), nested(METADATA_MAX_DEPTH + 1)]:
            response = post_json(api, path, {"name": "deep", "metadata": metadata}, method=method)
            assert "metadata" in error_of(response)["fields"], method
    assert list(Source.objects.values_list("name", "metadata")) == [("kept", {"team": "a"})]


BAD_METADATA = {
    "one level too deep": json.dumps({"title": "t", "text": TEXT, "metadata": nested(METADATA_MAX_DEPTH + 1)}),
    "deep inside an array": json.dumps({"text": TEXT, "metadata": {"a": [[[[[[[[[1]]]]]]]]]}}),
    "too many keys": json.dumps({"text": TEXT, "metadata": {f"k{i}": i for i in range(METADATA_MAX_KEYS + 1)}}),
    "too many keys across levels": json.dumps(
        {"text": TEXT, "metadata": {f"k{i}": {"x": 1} for i in range(METADATA_MAX_KEYS // 2 + 1)}}
    ),
    "too large": json.dumps({"text": TEXT, "metadata": {"notes": "x" * METADATA_MAX_BYTES}}),
    "a long key": json.dumps({"text": TEXT, "metadata": {"k" * (METADATA_MAX_KEY_CHARS + 1): 1}}),
    "NUL in a value": json.dumps({"text": TEXT, "metadata": {"a": "x\u0000y"}}),
    "NUL in a key": json.dumps({"text": TEXT, "metadata": {"a\u0000": "x"}}),
    "lone surrogate in a value": '{"text": "tea", "metadata": {"a": "x\\ud800"}}',
    "lone surrogate in a key": '{"text": "tea", "metadata": {"\\udfff": "x"}}',
    "lone surrogate in a list": '{"text": "tea", "metadata": {"a": ["ok", "\\ud83d"]}}',
    "a list": json.dumps({"text": TEXT, "metadata": [1, 2]}),
    "a string": json.dumps({"text": TEXT, "metadata": "lang=en"}),
    "an infinite number": '{"text": "tea", "metadata": {"a": 1e400}}',
}


def test_metadata_outside_the_limits_is_refused_naming_metadata(api, fresh_store):
    for case, body in BAD_METADATA.items():
        error = error_of(post_json(api, "/api/documents/", body))
        assert list(error["fields"]) == ["metadata"], (case, error)
    assert not Document.objects.exists()


def test_metadata_sent_as_a_multipart_field_gets_the_same_checks(api, fresh_store):
    for raw in ['{"a": NaN}', json.dumps(nested(METADATA_MAX_DEPTH + 1)), "[" * 5000 + "]" * 5000]:
        error = error_of(api.post("/api/documents/", {"text": TEXT, "metadata": raw}))
        assert list(error["fields"]) == ["metadata"], (raw[:20], error)
    assert not Document.objects.exists()


def test_metadata_at_the_limits_is_stored_indexed_and_searchable(api, fresh_store, run_commit_hooks):
    metadata = {
        "deep": nested(METADATA_MAX_DEPTH - 1),
        "k" * METADATA_MAX_KEY_CHARS: "long key",
        **{f"tag{i}": i for i in range(METADATA_MAX_KEYS - 2 - (METADATA_MAX_DEPTH - 2))},
    }
    with run_commit_hooks():
        response = post_json(api, "/api/documents/", {"title": "Edge", "text": TEXT, "metadata": metadata})
    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == metadata
    assert Chunk.objects.filter(index_status=Chunk.IndexStatus.INDEXED).count() == fresh_store.count() >= 1
    found = api.get("/api/search/", {"q": "tea", "mode": "semantic", "metadata": "tag3:3"}).json()
    assert [r["title"] for r in found["results"]] == ["Edge"]


def test_the_admin_refuses_deep_metadata_on_the_metadata_field_and_stores_nothing(staff_client, fresh_store):
    source = Source.objects.create(name="admin")
    url = reverse("admin:documents_document_add")
    for raw in [json.dumps(nested(130)), "[" * 5000 + "]" * 5000, '{"a": "x\\u0000"}', '{"a": "\\ud800"}']:
        response = staff_client.post(url, {"source": source.pk, "title": "Deep", "text": TEXT, "metadata": raw})
        assert response.status_code == 200, raw[:20]  # the form again, with its errors
        errors = response.context["adminform"].form.errors
        assert list(errors) == ["metadata"], (raw[:20], errors)
    assert not Document.objects.exists()


def change_form_data(client, url: str, **changes) -> dict:
    """What the admin's change page would post back: its form's and inlines' current values."""
    context = client.get(url).context
    data = {}
    forms = [context["adminform"].form]
    for inline in context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is not None and not isinstance(value, bool):
                data[form.add_prefix(name)] = value
    return {**data, **changes}


def test_the_admin_refuses_deep_metadata_when_changing_a_document_or_a_source(staff_client, stored):
    change = reverse("admin:documents_document_change", args=[stored.pk])
    response = staff_client.post(change, change_form_data(staff_client, change, metadata=json.dumps(nested(130))))
    assert response.status_code == 200 and "metadata" in response.context["adminform"].form.errors
    stored.refresh_from_db()
    assert stored.metadata == {"lang": "en"}

    source = stored.source
    change = reverse("admin:documents_source_change", args=[source.pk])
    response = staff_client.post(change, change_form_data(staff_client, change, metadata="[" * 5000 + "]" * 5000))
    assert response.status_code == 200 and "metadata" in response.context["adminform"].form.errors
    source.refresh_from_db()
    assert source.metadata == {}


def test_changing_metadata_in_the_admin_goes_through_the_update_service(staff_client, stored, run_commit_hooks, api):
    # A plain model save would store the metadata but leave every vector payload on the old one.
    change = reverse("admin:documents_document_change", args=[stored.pk])
    with run_commit_hooks():
        data = change_form_data(staff_client, change, metadata='{"lang": "en", "team": "tasting"}')
        response = staff_client.post(change, data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    found = api.get("/api/search/", {"q": "tea", "mode": "semantic", "metadata": "team:tasting"}).json()
    assert [r["document_id"] for r in found["results"]] == [stored.pk]


def test_the_ingest_service_refuses_bad_metadata_from_any_caller(fresh_store):
    # The crawler, the commands and the admin call the service directly, not the API.
    from documents.services import IngestError

    source = source_get_or_create(name="direct")
    for metadata in [nested(130), {"a": float("nan")}, {"a": "\ud800"}, {1: "x"}, {"a": object()}]:
        with pytest.raises(IngestError) as caught:
            document_ingest(source=source, text=TEXT, metadata=metadata)
        assert caught.value.field == "metadata"
    assert not Document.objects.exists()


def test_ingesting_a_file_whose_name_is_not_utf8_stores_it_with_replacement_characters(tmp_path, fresh_store):
    # A Latin-1 file system: the name reaches Python with a lone surrogate (surrogateescape).
    path = os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt")
    with open(path, "wb") as handle:
        handle.write(TEXT.encode())
    call_command("ingest", str(tmp_path), "--no-embed", "--source", "latin", stdout=StringIO(), stderr=StringIO())
    document = Document.objects.get(source__name="latin")
    assert document.metadata["filename"] == "caf\ufffd.txt"


def test_ingest_refuses_a_source_name_that_is_not_utf8(tmp_path, fresh_store):
    (tmp_path / "tea.txt").write_text(TEXT)
    with pytest.raises(CommandError, match="--source"):
        call_command("ingest", str(tmp_path), "--no-embed", "--source", os.fsdecode(b"caf\xe9"), stdout=StringIO())
    assert not Source.objects.exists()


# --- 500s that must be 4xx --------------------------------------------------------------------------


MODES = ["keyword", "semantic", "hybrid"]


def test_a_source_filter_that_is_not_an_id_or_a_name_is_a_400(api, stored):
    # "²".isdigit() is true, int("²") a ValueError: this was a 500 in every mode
    for mode in MODES:
        for value in ["²", "\u0661", "1²", "+1", " ", ","]:
            error = error_of(api.get("/api/search/", {"q": "tea", "mode": mode, "source": value}))
            assert "source" in error["fields"], (mode, value)


def test_a_source_that_looks_like_a_digit_is_found_by_name(api, stored):
    source_get_or_create(name="²")
    for mode in ("keyword", "semantic", "hybrid"):
        assert api.get("/api/search/", {"q": "tea", "mode": mode, "source": "²"}).json()["count"] == 0
    assert api.get("/api/documents/", {"source": "²"}).json()["count"] == 0
    assert api.get("/api/documents/", {"source": "³"}).status_code == 200
    response = post_json(api, "/api/ask/", {"question": "tea", "source": "³"})
    assert "source" in error_of(response)["fields"]


def test_a_document_filter_that_is_no_id_is_a_400(api, stored):
    # beyond 64 bits the vector engine's filter raised OverflowError: a 500 in semantic and hybrid
    for mode in MODES:
        for value in ["99999999999999999999", "9223372036854775808", "0", "-1", "²", "1.5", "1,x"]:
            error = error_of(api.get("/api/search/", {"q": "tea", "mode": mode, "document": value}))
            assert "document" in error["fields"], (mode, value)


def test_the_largest_documented_document_id_is_a_valid_filter(api, stored):
    for mode in ("keyword", "semantic", "hybrid"):
        body = api.get("/api/search/", {"q": "tea", "mode": mode, "document": f"{stored.pk}, 999999999999999999"})
        assert body.status_code == 200 and body.json()["count"] == 1, (mode, body.content)


HUGE = "99999999999999999999"


PATHS_WITH_IDS = [
    ("get", "/api/documents/{}/"),
    ("patch", "/api/documents/{}/"),
    ("delete", "/api/documents/{}/"),
    ("post", "/api/documents/{}/reembed/"),
    ("get", "/api/sources/{}/"),
    ("patch", "/api/sources/{}/"),
    ("put", "/api/sources/{}/"),
    ("delete", "/api/sources/{}/"),
    ("get", "/api/chunks/{}/"),
    ("get", "/api/crawl-jobs/{}/"),
    ("post", "/api/crawl-jobs/{}/cancel/"),
    ("get", "/api/crawl-jobs/{}/pages/"),
]


def test_ids_in_paths_that_name_no_row_are_a_404(api):
    for method, path in PATHS_WITH_IDS:
        for value in [HUGE, "-1", "0", "²", "1e3"]:
            if method == "get":
                response = api.get(path.format(value))
            else:
                response = getattr(api, method)(path.format(value), "{}", content_type="application/json")
            assert error_of(response, 404)["code"] == "not_found", (method, path, value)


CHUNK_LIST_PARAMS = [
    {"document": HUGE},
    {"document": "-1"},
    {"limit": HUGE},
    {"limit": "-5"},
    {"offset": HUGE},
    {"offset": "-5"},
    {"limit": "1.5"},
    {"limit": ""},
    {"index_status": "\u00b2"},
]


LIST_PARAMS = [
    *[("/api/chunks/", params) for params in CHUNK_LIST_PARAMS],
    ("/api/search/", {"q": "tea", "limit": HUGE}),
    ("/api/search/", {"q": "tea", "offset": HUGE}),
    ("/api/search/", {"q": "tea", "limit": "-1"}),
    ("/api/search/", {"q": "tea", "limit": "1.5"}),
    ("/api/search/", {"q": "tea", "offset": ""}),
    ("/api/search/", {"q": "tea", "mode": ""}),
    ("/api/search/", {"q": ""}),
    ("/api/documents/", {"source": HUGE}),
    ("/api/documents/", {"source": "-1"}),
    ("/api/documents/", {"limit": HUGE, "offset": HUGE}),
    ("/api/documents/", {"created_after": "99999-01-01T00:00:00Z"}),
    ("/api/documents/", {"created_after": "2024-13-40"}),
    ("/api/sources/", {"limit": "-1", "offset": "-1"}),
    ("/api/crawl-jobs/", {"source": HUGE, "status": "nope"}),
    ("/api/crawl-jobs/1/pages/", {"status": "nope", "limit": HUGE}),
]


def test_list_and_search_parameters_never_fail_the_server(api, stored):
    for path, params in LIST_PARAMS:
        response = api.get(path, params)
        assert response.status_code in (200, 400, 404), (path, params, response.status_code, response.content[:300])


def test_repeated_scalar_parameters_never_fail_the_server(api, stored):
    # ?limit=1&limit=2: an array where a scalar is expected
    for path in (
        "/api/search/?q=tea&q=coffee&limit=1&limit=2&mode=semantic&mode=keyword",
        "/api/documents/?source=1&source=2&limit=1&limit=x",
    ):
        assert api.get(path).status_code in (200, 400), path


JSON_BODY_OPERATIONS = [
    ("post", "/api/documents/"),
    ("patch", "/api/documents/{doc}/"),
    ("post", "/api/sources/"),
    ("patch", "/api/sources/{source}/"),
    ("put", "/api/sources/{source}/"),
    ("post", "/api/crawl-jobs/"),
    ("post", "/api/ask/"),
]


def test_json_nested_past_the_recursion_limit_is_a_400_naming_the_body(api, stored):
    for method, path in JSON_BODY_OPERATIONS:
        url = path.format(doc=stored.pk, source=stored.source_id)
        for depth in (1000, 100_000):
            for body in ["[" * depth + "]" * depth, '{"metadata": ' + "[" * depth + "]" * depth + "}"]:
                error = error_of(post_json(api, url, body, method=method))
                assert error["code"] == "parse_error" and list(error["fields"]) in (["body"], ["metadata"]), error
    stored.refresh_from_db()
    assert stored.metadata == {"lang": "en"} and Document.objects.count() == 1


def test_json_nested_deeper_than_the_body_allows_names_its_field(api, stored):
    error = error_of(post_json(api, "/api/ask/", {"question": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]] * 1}))
    assert "question" in error["fields"]  # shallow enough for the field's own check
    deep = {"question": "tea", "mode": nested(100)}
    error = error_of(post_json(api, "/api/ask/", deep))
    assert error["code"] == "parse_error" and list(error["fields"]) == ["mode"]


LONE_SURROGATES = [
    ("/api/documents/", '{"title": "\\ud800", "text": "tea"}', "title"),
    ("/api/documents/", '{"text": "tea \\udfff leaves"}', "text"),
    ("/api/documents/", '{"text": "tea", "source": "\\ud800"}', "source"),
    ("/api/documents/", '{"text": "tea", "url": "https://example.com/\\ud800"}', "url"),
    ("/api/documents/", '{"text": "tea", "metadata": {"a": "\\ud800"}}', "metadata"),
    ("/api/sources/", '{"name": "\\ud800"}', "name"),
    ("/api/sources/", '{"name": "ok", "metadata": {"\\ud800": 1}}', "metadata"),
    ("/api/crawl-jobs/", '{"start_url": "http://127.0.0.1:9/\\ud800"}', "start_url"),
    ("/api/crawl-jobs/", '{"start_url": "http://127.0.0.1:9/", "exclude": ["\\ud800"]}', "exclude"),
    ("/api/crawl-jobs/", '{"start_url": "http://127.0.0.1:9/", "include": ["re:\\ud800"]}', "include"),
    ("/api/crawl-jobs/", '{"start_url": "http://127.0.0.1:9/", "allowed_hosts": ["\\ud800"]}', "allowed_hosts"),
    ("/api/crawl-jobs/", '{"start_url": "http://127.0.0.1:9/", "source": "\\ud800"}', "source"),
    ("/api/ask/", '{"question": "tea \\ud800"}', "question"),
    ("/api/ask/", '{"question": "tea", "source": "\\ud800"}', "source"),
]


def test_a_lone_surrogate_is_refused_naming_its_field(api, stored):
    for path, body, field in LONE_SURROGATES:
        error = error_of(post_json(api, path, body))
        assert field in error["fields"], (path, field, error)
        # every message is plain text, never the repr of DRF's error objects
        assert "ErrorDetail" not in json.dumps(error), error
    assert Document.objects.count() == 1


def test_a_lone_surrogate_in_patches_is_refused(api, stored):
    error = error_of(post_json(api, f"/api/documents/{stored.pk}/", '{"title": "\\ud800"}', method="patch"))
    assert "title" in error["fields"]
    stored.refresh_from_db()
    assert stored.title == "Tea"


def test_a_query_string_that_is_not_utf8_never_fails_the_server(api, stored, settings):
    settings.SEARCH_PUBLIC = True  # the search page too
    for path in ["/api/search/", "/api/documents/", "/"]:
        # %ED%A0%80 is a UTF-8-encoded lone surrogate, %FF no UTF-8 at all
        for query in ["q=%ED%A0%80", "q=tea%FF&mode=semantic", "q=tea&source=%ED%A0%80", "q=tea&metadata=%ED%A0%80:x"]:
            response = api.get(path, QUERY_STRING=query)
            assert response.status_code in (200, 400), (path, query, response.status_code)


# --- Error bodies: no paths, no internals --------------------------------------------------------


@pytest.fixture
def broken_store(settings, tmp_path, stored):
    """The embedded store pointed at a regular file: the engine fails to open it for real (the
    OS error names the server path)."""
    path = tmp_path / "not-a-folder"
    path.write_text("")
    settings.QDRANT_PATH = path
    return str(path)


def assert_clean(text: str, secret: str) -> None:
    for leak in (secret, str(os.path.dirname(secret)), "Errno", "Traceback", 'File "'):
        assert leak not in text, (leak, text)


def test_a_failing_vector_store_answers_503_without_its_path_or_error(api, broken_store, caplog):
    with caplog.at_level(logging.WARNING):
        response = api.get("/api/search/", {"q": "tea", "mode": "semantic"})
        error = error_of(response, 503)
        assert error["code"] == "semantic_unavailable" and "vector store" in error["message"]
        assert_clean(response.content.decode(), broken_store)

        asked = post_json(api, "/api/ask/", {"question": "How is tea made?", "mode": "semantic"})
        assert error_of(asked, 503)["code"] == "semantic_unavailable"
        assert_clean(asked.content.decode(), broken_store)
    # the operator still gets the cause
    assert broken_store in caplog.text


def test_hybrid_search_over_a_failing_store_warns_without_its_path(api, broken_store, client, settings):
    settings.SEARCH_PUBLIC = True
    response = api.get("/api/search/", {"q": "tea", "mode": "hybrid"})
    body = response.json()
    assert response.status_code == 200 and body["count"] == 1 and body["warnings"]
    assert_clean(response.content.decode(), broken_store)
    page = client.get("/", {"q": "tea", "mode": "semantic"})
    assert page.status_code == 503
    assert_clean(page.content.decode(), broken_store)


def test_listing_the_chunks_of_a_document_that_does_not_exist_is_an_empty_page(api, stored):
    # was a 400 "Select a valid choice" for any id without a row
    assert api.get("/api/chunks/", {"document": stored.pk + 1000}).json()["count"] == 0
    assert api.get("/api/chunks/", {"document": stored.pk}).json()["count"] == stored.chunks.count()
    for value in [HUGE, "0", "-1", "²", "x"]:
        assert "document" in error_of(api.get("/api/chunks/", {"document": value}))["fields"], value
