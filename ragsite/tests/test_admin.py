from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from crawl.models import CrawlJob, CrawlPage
from documents.models import Chunk, Document, EmbeddingCache, Source


@pytest.fixture
def objects(db):
    source = Source.objects.create(name="docs", kind=Source.Kind.CRAWL, base_url="https://example.com/")
    document = Document.objects.create(source=source, title="Guide", url="https://example.com/guide", text="Read me")
    chunk = Chunk.objects.create(document=document, ordinal=0, text="Read me", content_hash="h")
    job = CrawlJob.objects.create(source=source, start_url="https://example.com/")
    page = CrawlPage.objects.create(job=job, url="https://example.com/guide", document=document)
    cache = EmbeddingCache.objects.create(model="m", content_hash="h", dimension=1, vector=b"\0\0\0\0")
    return {Source: source, Document: document, Chunk: chunk, CrawlJob: job, CrawlPage: page, EmbeddingCache: cache}


def _urls(objects):
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        yield reverse(f"{prefix}_changelist")
        if model in objects:
            yield reverse(f"{prefix}_change", args=[objects[model].pk])


def test_every_admin_page_answers_200_for_staff(staff_client, objects):
    for url in _urls(objects):
        response = staff_client.get(url)
        assert response.status_code == 200, url


def test_every_admin_page_redirects_anonymous_users_to_login(client, objects):
    for url in _urls(objects):
        response = client.get(url)
        assert response.status_code == 302, url
        assert "/admin/login/" in response["Location"]


def test_admin_document_search_uses_the_full_text_vector(staff_client, objects):
    source = objects[Source]
    other = Document.objects.create(source=source, title="Other", url="https://example.com/other", text="Running shoes")
    Chunk.objects.create(document=other, ordinal=0, text="Running shoes", content_hash="r")
    response = staff_client.get(reverse("admin:documents_document_changelist"), {"q": "run"})
    assert response.status_code == 200
    # "run" matches "Running" only through the stemmed full-text vector of a chunk, not a substring search.
    assert "Other" in response.content.decode()
    assert "Guide" not in response.content.decode()
