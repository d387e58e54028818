"""The admin's actions through the real admin: each goes through its app's services and says
what it did ("Queued 12 documents (340 chunks) for re-embedding", "Deleted 3 documents and 210
chunks", "Started 2 crawl jobs; 1 already running")."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from accounts.auth import api_key_create
from accounts.models import ApiKey
from crawl.models import CrawlJob, CrawlPage
from documents.models import Chunk, Document, Source
from ragsite.admin import DELETION_LISTED
from ragsite.tests.admin_data import admin_rows, chunks_add, crawl_job_add, document_add
from search.models import Conversation, Turn

pytestmark = pytest.mark.django_db


def act(client, name: str, action: str, objects, **extra):
    """Run an action on ``objects`` from the list ``name`` (e.g. "documents_document"); the messages."""
    response = client.post(
        reverse(f"admin:{name}_changelist"),
        {"action": action, "_selected_action": [obj.pk for obj in objects], **extra},
        follow=True,
    )
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


# --- documents and sources -------------------------------------------------------------------------


def test_re_embedding_documents_queues_their_chunks_and_says_how_many(staff_client, settings):
    source = Source.objects.create(name="notes")
    documents = [document_add(source, n, chunks=4) for n in range(3)]
    empty = document_add(source, 9, chunks=0)
    Chunk.objects.update(
        index_status=Chunk.IndexStatus.FAILED, sync_attempts=settings.VECTORS_SYNC_MAX_ATTEMPTS, last_error="boom"
    )

    messages = act(staff_client, "documents_document", "reembed", [*documents, empty])

    assert messages == ["Queued 3 documents (12 chunks) for re-embedding; 1 document had no chunks."]
    # Through documents.services.document_reembed: pending again, attempts and errors reset.
    assert set(Chunk.objects.values_list("index_status", "sync_attempts", "last_error")) == {("pending", 0, "")}


def test_re_embedding_a_source_re_embeds_every_document_in_it(staff_client):
    sources = [Source.objects.create(name=f"s{n}") for n in range(2)]
    for n in range(5):
        document_add(sources[n % 2], n, chunks=2)
    other = Source.objects.create(name="untouched")
    document_add(other, 99, chunks=2)
    Chunk.objects.update(index_status=Chunk.IndexStatus.INDEXED)

    messages = act(staff_client, "documents_source", "reembed", sources)

    assert messages == ["2 sources: Queued 5 documents (10 chunks) for re-embedding."]
    assert Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING).count() == 10
    assert not Chunk.objects.filter(document__source=other, index_status=Chunk.IndexStatus.PENDING).exists()


def test_deleting_documents_asks_with_counts_then_deletes_them_and_their_chunks(staff_client):
    source = Source.objects.create(name="notes")
    doomed = [document_add(source, n, chunks=70) for n in range(3)]
    kept = document_add(source, 9, chunks=5)
    url = reverse("admin:documents_document_changelist")
    selection = {"action": "delete_selected", "_selected_action": [d.pk for d in doomed]}

    confirm = staff_client.post(url, selection)
    assert confirm.status_code == 200
    text = confirm.content.decode()
    # Counted, not listed: 210 chunk lines made this page as tall as the data.
    assert "Chunks: 210" in text and "Documents: 3" in text
    assert not re.search(r"/admin/documents/chunk/[0-9a-f-]{36}/", text)

    done = staff_client.post(url, {**selection, "post": "yes"}, follow=True)
    assert [str(m) for m in done.context["messages"]] == ["Deleted 3 documents and 210 chunks."]
    assert list(Document.objects.all()) == [kept]
    assert Chunk.objects.count() == 5


def test_the_deletion_page_of_many_documents_names_a_few_and_counts_the_rest(staff_client):
    source = Source.objects.create(name="notes")
    documents = [document_add(source, n, chunks=1) for n in range(DELETION_LISTED + 10)]
    response = staff_client.post(
        reverse("admin:documents_document_changelist"),
        {"action": "delete_selected", "_selected_action": [d.pk for d in documents]},
    )
    text = response.content.decode()
    assert "… and 10 more" in text
    assert text.count('<li>Document: <a href="/admin/documents/document/') == 0  # Django's own lines
    assert text.count('<a href="/admin/documents/document/') >= DELETION_LISTED


def test_deleting_one_document_from_its_page_goes_through_the_service(staff_client):
    document = document_add(Source.objects.create(name="notes"), 1, chunks=40)
    url = reverse("admin:documents_document_delete", args=[document.pk])
    confirm = staff_client.get(url)
    assert "Chunks: 40" in confirm.content.decode()
    staff_client.post(url, {"post": "yes"})
    assert not Document.objects.exists() and not Chunk.objects.exists()


def test_deleting_a_source_reports_its_documents_chunks_and_crawls(staff_client):
    source = Source.objects.create(name="site", kind=Source.Kind.CRAWL, base_url="https://example.com/")
    for n in range(3):
        document_add(source, n, chunks=4)
    crawl_job_add(source, pages=5)
    kept = Source.objects.create(name="kept")

    messages = act(staff_client, "documents_source", "delete_selected", [source], post="yes")

    assert messages == ["Deleted 1 source, 3 documents, 12 chunks, 1 crawl job and 5 crawl pages."]
    assert list(Source.objects.all()) == [kept]
    assert not Document.objects.exists() and not CrawlJob.objects.exists() and not CrawlPage.objects.exists()


# --- crawls ----------------------------------------------------------------------------------------


def test_crawling_sources_starts_jobs_except_where_one_is_running_or_there_is_no_url(staff_client):
    fresh = Source.objects.create(name="fresh", kind=Source.Kind.CRAWL, base_url="http://127.0.0.1:9/")
    busy = Source.objects.create(name="busy", kind=Source.Kind.CRAWL, base_url="http://127.0.0.1:9/")
    crawl_job_add(busy, pages=0, status=CrawlJob.Status.RUNNING, error="")
    bare = Source.objects.create(name="bare")

    messages = act(staff_client, "documents_source", "crawl", [fresh, busy, bare])

    job = CrawlJob.objects.get(source=fresh)  # queued through crawl.jobs (the task runs on commit)
    assert job.status == CrawlJob.Status.QUEUED and job.start_url == "http://127.0.0.1:9/"
    assert messages == [f"Started 1 crawl job ({job.pk}); 1 already running; no base URL to crawl for bare."]
    assert CrawlJob.objects.filter(source=busy).count() == 1


def test_running_crawl_jobs_again_copies_their_settings_once_per_source(staff_client):
    source = Source.objects.create(name="site", kind=Source.Kind.CRAWL)
    first = crawl_job_add(
        source,
        pages=0,
        start_url="http://127.0.0.1:9/docs/",
        status=CrawlJob.Status.SUCCEEDED,
        max_pages=7,
        max_depth=2,
        include_patterns=["/docs/*"],
        use_sitemap=False,
    )
    second = crawl_job_add(source, pages=0, start_url="http://127.0.0.1:9/", status=CrawlJob.Status.FAILED)

    messages = act(staff_client, "crawl_crawljob", "run_again", [first, second])

    new = CrawlJob.objects.get(status=CrawlJob.Status.QUEUED)
    assert messages == [f"Started 1 crawl job ({new.pk}); 1 already running."]
    assert (new.start_url, new.max_pages, new.max_depth, new.include_patterns, new.use_sitemap) == (
        "http://127.0.0.1:9/docs/",
        7,
        2,
        ["/docs/*"],
        False,
    )


def test_a_crawl_job_that_cannot_start_again_says_why(staff_client, settings):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = False
    job = crawl_job_add(Source.objects.create(name="site"), pages=0, start_url="http://127.0.0.1:9/")
    messages = act(staff_client, "crawl_crawljob", "run_again", [job])
    assert len(messages) == 1 and messages[0].startswith(f"Started 0 crawl jobs; job {job.pk}: ")
    assert CrawlJob.objects.count() == 1


def test_cancelling_crawl_jobs_says_which_stopped_and_which_had_finished(staff_client):
    source = Source.objects.create(name="site")
    queued = crawl_job_add(source, pages=2, status=CrawlJob.Status.QUEUED, error="")
    running = crawl_job_add(source, pages=0, status=CrawlJob.Status.RUNNING, error="")
    done = crawl_job_add(source, pages=0, status=CrawlJob.Status.SUCCEEDED, error="")

    messages = act(staff_client, "crawl_crawljob", "cancel", [queued, running, done])

    assert messages == [
        "Cancelled 1 queued crawl job; asked 1 running job to stop after its current page; 1 job had already finished."
    ]
    queued.refresh_from_db()
    running.refresh_from_db()
    assert queued.status == CrawlJob.Status.CANCELLED
    assert running.status == CrawlJob.Status.RUNNING and running.cancel_requested


def test_deleting_crawl_jobs_counts_their_pages(staff_client):
    jobs = [crawl_job_add(Source.objects.create(name=f"s{n}"), pages=4) for n in range(2)]
    messages = act(staff_client, "crawl_crawljob", "delete_selected", jobs, post="yes")
    assert messages == ["Deleted 2 crawl jobs and 8 crawl pages."]
    assert not CrawlPage.objects.exists()


def test_a_queued_or_running_crawl_job_is_cancelled_before_it_can_be_deleted(staff_client):
    source = Source.objects.create(name="site")
    done = crawl_job_add(source, pages=1)
    running = crawl_job_add(source, pages=1, status=CrawlJob.Status.RUNNING, error="")
    queued = crawl_job_add(source, pages=1, status=CrawlJob.Status.QUEUED, error="")

    messages = act(staff_client, "crawl_crawljob", "delete_selected", [done, running, queued], post="yes")

    assert messages == [f"Nothing deleted: cancel crawl jobs {running.pk}, {queued.pk} first (queued or running)."]
    assert CrawlJob.objects.count() == 3
    assert staff_client.get(reverse("admin:crawl_crawljob_delete", args=[running.pk])).status_code == 403
    assert staff_client.get(reverse("admin:crawl_crawljob_delete", args=[done.pk])).status_code == 200


# --- keys and conversations ------------------------------------------------------------------------


def test_revoking_keys_says_how_many_and_which_were_revoked_already(staff_client):
    keys = [api_key_create(name=f"key {n}")[0] for n in range(3)]
    act(staff_client, "accounts_apikey", "revoke", keys[:1])
    messages = act(staff_client, "accounts_apikey", "revoke", keys)
    assert messages == ["Revoked 2 API keys; 1 was already revoked."]
    assert not ApiKey.objects.filter(revoked_at__isnull=True).exists()


def test_deleting_conversations_counts_their_turns(staff_client):
    admin_rows(2)
    messages = act(staff_client, "search_conversation", "delete_selected", Conversation.objects.all(), post="yes")
    assert messages == ["Deleted 2 conversations and 4 turns."]
    assert not Turn.objects.exists()


def test_deleting_needs_the_permission_for_what_goes_with_the_rows(client, django_user_model):
    """A staff member who may delete documents but not chunks is refused, as Django refuses."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("editor", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_document", "delete_document", "view_chunk"])
    )
    client.force_login(user)
    document = document_add(Source.objects.create(name="notes"), 1, chunks=0)
    chunks_add(document, 3)
    response = client.post(
        reverse("admin:documents_document_changelist"),
        {"action": "delete_selected", "_selected_action": [document.pk], "post": "yes"},
    )
    assert response.status_code == 403
    assert Document.objects.filter(pk=document.pk).exists()
