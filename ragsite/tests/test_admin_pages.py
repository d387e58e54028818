"""The admin's lists and change pages through the real admin: what they show, and that their
queries stay bounded however many rows, chunks or pages there are."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crawl.models import CrawlJob
from documents.models import Chunk, Source
from ragsite.admin import SAMPLE_ROWS
from ragsite.tests.admin_data import LONG_ERROR, LONG_URL, admin_rows, chunks_add, crawl_job_add, document_add
from search.models import Conversation, Turn

pytestmark = pytest.mark.django_db

LISTS = [
    "documents_source",
    "documents_document",
    "documents_chunk",
    "crawl_crawljob",
    "crawl_crawlpage",
    "accounts_apikey",
    "vectors_embeddingcache",
    "search_conversation",
    "search_turn",
]


def changelist(name: str) -> str:
    return reverse(f"admin:{name}_changelist")


def page_text(response) -> str:
    """The page's text with the tags and spacing gone, to read what a person reads."""
    text = re.sub(r"<[^>]+>", " ", response.content.decode())
    return " ".join(text.split())


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(captured)


# --- bounded queries -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LISTS)
def test_a_list_costs_the_same_queries_for_3_rows_as_for_60(staff_client, name):
    admin_rows(3, prefix="few")
    few = queries_for(staff_client, changelist(name))
    admin_rows(57, prefix="many")
    assert queries_for(staff_client, changelist(name)) == few  # no query per row


def test_the_document_list_with_many_rows_stays_within_a_few_queries(staff_client, django_assert_max_num_queries):
    admin_rows(60)
    # Session, user, the count, the page with every row's chunk counts (one GROUP BY), the filters.
    with django_assert_max_num_queries(12):
        response = staff_client.get(changelist("documents_document"))
    assert response.status_code == 200


def test_a_document_with_2000_chunks_has_a_short_page_in_a_few_queries(staff_client, django_assert_max_num_queries):
    source = Source.objects.create(name="manuals")
    document = document_add(source, 1, chunks=0, title="Operations manual", text="word " * 200_000)
    chunks_add(document, 2000)
    url = reverse("admin:documents_document_change", args=[document.pk])

    with django_assert_max_num_queries(14):
        response = staff_client.get(url)

    assert response.status_code == 200
    text = page_text(response)
    # Counts by state (aggregated), each a link to the chunks in that state.
    assert "2,000 total" in text and "667 embedded" in text and "667 pending" in text and "666 failed" in text
    assert "Last error (chunk" in text and "ConnectError: the embedding service" in text
    # The first chunks only, and a link to all of them in the (paginated) chunk list.
    assert f"The first {SAMPLE_ROWS} of 2,000 chunks" in text
    assert response.content.decode().count('<td><a href="/admin/documents/chunk/') == SAMPLE_ROWS
    assert f'href="/admin/documents/chunk/?document={document.pk}"' in response.content.decode()
    # A bounded preview of the text, not a megabyte of it.
    assert "The first 5,000 of 1,000,000 characters." in text
    assert len(response.content) < 150_000
    # No inline of chunks: nothing to post back per chunk.
    assert response.context["inline_admin_formsets"] == []


def test_a_crawl_job_with_many_pages_has_a_short_page_in_a_few_queries(staff_client, django_assert_max_num_queries):
    job = crawl_job_add(Source.objects.create(name="site"), pages=1500)
    with django_assert_max_num_queries(12):
        response = staff_client.get(reverse("admin:crawl_crawljob_change", args=[job.pk]))
    assert response.status_code == 200
    text = page_text(response)
    assert "1,500 pages" in text and "queued 750" in text and "failed 750" in text
    assert f"The first {SAMPLE_ROWS} of 1,500 pages" in text
    assert f'href="/admin/crawl/crawlpage/?job={job.pk}"' in response.content.decode()
    assert len(response.content) < 150_000


# --- what the lists say ----------------------------------------------------------------------------


def test_documents_show_their_embedding_state_and_progress(staff_client, settings):
    source = Source.objects.create(name="notes")
    states = Chunk.IndexStatus
    done = document_add(source, 1, chunks=0, title="All done")
    chunks_add(done, 4, states=[states.INDEXED])
    waiting = document_add(source, 2, chunks=0, title="Half waiting")
    chunks_add(waiting, 4, states=[states.INDEXED, states.PENDING])
    failing = document_add(source, 3, chunks=0, title="Failing")
    chunks_add(failing, 3, states=[states.FAILED, states.INDEXED, states.INDEXED])
    quarantined = document_add(source, 4, chunks=0, title="Quarantined")
    chunks_add(quarantined, 2, states=[states.FAILED])
    quarantined.chunks.update(sync_attempts=settings.VECTORS_SYNC_MAX_ATTEMPTS)
    document_add(source, 5, chunks=0, title="Empty")

    rows = {
        title: page_text_of_row(staff_client, title)
        for title in ["All done", "Half waiting", "Failing", "Quarantined", "Empty"]
    }
    assert "indexed 4/4" in rows["All done"]
    assert "2 pending 2/4" in rows["Half waiting"]
    assert "1 failed 2/3" in rows["Failing"]
    assert "2 quarantined 0/2" in rows["Quarantined"]
    assert "no chunks 0/0" in rows["Empty"]

    by_state = staff_client.get(changelist("documents_document"), {"embedding": "quarantined"})
    assert [d.title for d in by_state.context["cl"].result_list] == ["Quarantined"]
    by_state = staff_client.get(changelist("documents_document"), {"embedding": "indexed"})
    assert [d.title for d in by_state.context["cl"].result_list] == ["All done"]


def page_text_of_row(client, title: str) -> str:
    """The text of the document list's row for ``title``."""
    html = client.get(changelist("documents_document"), {"q": title}).content.decode()
    rows = re.findall(r"<tr>.*?</tr>", html.partition("<tbody>")[2], re.S)
    row = next(r for r in rows if title in r)
    return " ".join(re.sub(r"<[^>]+>", " ", row).split())


def test_long_titles_and_urls_are_clipped_with_the_whole_text_in_the_tooltip(staff_client):
    source = Source.objects.create(name="docs")
    document_add(source, 1)
    html = staff_client.get(changelist("documents_document")).content.decode()
    assert re.search(r'<th class="field-title_wide"><a href="[^"]+"><span class="rs-clip" title="A very long', html)
    assert f'title="{LONG_URL}?page=1"' in html  # the URL under the title, whole in its tooltip


def test_sources_show_documents_and_chunk_progress(staff_client):
    source = Source.objects.create(name="handbook", kind=Source.Kind.CRAWL, base_url=LONG_URL)
    for n in range(3):
        document_add(source, n, chunks=4)  # cycling indexed, pending, failed: 2, 1, 1 each
    text = page_text(staff_client.get(changelist("documents_source")))
    assert "handbook" in text and "website crawl 3 6/12 3 pending · 3 failed" in text
    assert (
        f'href="/admin/documents/document/?source__id__exact={source.pk}"'
        in staff_client.get(changelist("documents_source")).content.decode()
    )

    page = page_text(staff_client.get(reverse("admin:documents_source_change", args=[source.pk])))
    assert "3 documents" in page and "12 total" in page and "6 embedded" in page and "3 failed" in page


def test_crawl_jobs_show_state_pages_and_the_last_error(staff_client, settings):
    source = Source.objects.create(name="site")
    crawl_job_add(source, pages=6)
    old = timezone.now() - timedelta(seconds=settings.CRAWL_STALE_SECONDS + 60)
    crawl_job_add(source, pages=0, status=CrawlJob.Status.RUNNING, error="", heartbeat_at=old)
    crawl_job_add(source, pages=0, status=CrawlJob.Status.RUNNING, error="", heartbeat_at=timezone.now())
    crawl_job_add(
        source, pages=0, status=CrawlJob.Status.RUNNING, error="", heartbeat_at=timezone.now(), cancel_requested=True
    )
    response = staff_client.get(changelist("crawl_crawljob"))
    text = page_text(response)
    assert "failed 40 fetched 3 queued · 3 failed ConnectError: the embedding service" in text
    assert "stalled" in text and "stopping" in text and " running " in text
    # The error is clipped to a line; its tooltip holds (the first 300 characters of) the rest.
    assert (
        'title="ConnectError: the embedding service did not answer in time. ConnectError' in response.content.decode()
    )
    assert LONG_ERROR.strip() not in response.content.decode()


def test_the_chunk_list_narrowed_to_a_document_names_it_and_refuses_odd_ids_quietly(staff_client):
    source = Source.objects.create(name="docs")
    first = document_add(source, 1, chunks=5, title="First")
    document_add(source, 2, chunks=7, title="Second")
    response = staff_client.get(changelist("documents_chunk"), {"document": first.pk})
    assert response.context["cl"].result_count == 5
    assert "By document" in page_text(response) and ">First<" in response.content.decode()
    for odd in ["²", "-1", "99999999999999999999", "x"]:
        response = staff_client.get(changelist("documents_chunk"), {"document": odd})
        assert response.status_code == 200 and response.context["cl"].result_count == 0, odd


def test_chunks_cannot_be_deleted_on_their_own(staff_client):
    document = document_add(Source.objects.create(name="docs"), 1, chunks=2)
    chunk = document.chunks.first()
    assert staff_client.get(changelist("documents_chunk")).context["action_form"] is None  # no actions at all
    assert staff_client.get(reverse("admin:documents_chunk_delete", args=[chunk.pk])).status_code == 403


def test_the_admin_says_it_is_ragsite_and_loads_its_stylesheet(staff_client):
    html = staff_client.get(reverse("admin:index")).content.decode()
    assert "ragsite administration" in html
    assert re.search(r'<link rel="stylesheet" href="/static/ragsite/admin\.css', html)
    assert staff_client.get("/static/ragsite/admin.css").status_code == 200


def links_in(html: str, css_class: str) -> list[str]:
    """The hrefs inside the element(s) with ``css_class`` (the counts and the samples of a page)."""
    found = []
    for block in re.findall(rf'<(?:ul|div) class="{css_class}">(.*?)</(?:ul|div)>', html, re.S):
        found += [href.replace("&amp;", "&") for href in re.findall(r'href="([^"]+)"', block)]
    return found


def test_the_counts_on_change_pages_link_to_lists_of_exactly_those_rows(staff_client):
    source = Source.objects.create(name="docs")
    document = document_add(source, 1, chunks=9)  # 3 indexed, 3 pending, 3 failed
    document_add(source, 2, chunks=6)
    job = crawl_job_add(source, pages=5)  # 2 queued, 3 failed

    pages = {
        reverse("admin:documents_document_change", args=[document.pk]): [9, 3, 3, 3],
        reverse("admin:documents_source_change", args=[source.pk]): [15, 5, 5, 5],
        reverse("admin:crawl_crawljob_change", args=[job.pk]): [5, 2, 3],
    }
    for page, expected in pages.items():
        links = links_in(staff_client.get(page).content.decode(), "rs-counts")
        counts = []
        for link in links:
            response = staff_client.get(link)
            assert response.status_code == 200, link
            counts.append(response.context["cl"].result_count)
        assert counts == expected, (page, links)
    documents = staff_client.get(f"{changelist('documents_document')}?source__id__exact={source.pk}")
    assert documents.context["cl"].result_count == 2


def test_a_long_conversation_shows_its_latest_turns_and_links_to_all(staff_client, django_assert_max_num_queries):
    conversation = Conversation.objects.create(owner="user:1", title="Bees")
    Turn.objects.bulk_create(
        Turn(
            conversation=conversation,
            position=n,
            question=f"Question number {n}?",
            searched_for=f"question {n}",
            rewritten_by="none",
            answer="An answer. " * 200,
            status=Turn.Status.ANSWERED,
            mode="hybrid",
            provider="extractive",
        )
        for n in range(45)
    )
    with django_assert_max_num_queries(10):
        response = staff_client.get(reverse("admin:search_conversation_change", args=[conversation.pk]))
    text = page_text(response)
    assert "The latest 20 of 45 turns" in text
    assert "Question number 44?" in text and "Question number 25?" in text and "Question number 24?" not in text
    assert response.context["inline_admin_formsets"] == []

    turns = staff_client.get(f"{changelist('search_turn')}?conversation={conversation.pk}")
    assert turns.context["cl"].result_count == 45
    for odd in ["not-a-uuid", "²", str(uuid.uuid4())]:
        turns = staff_client.get(changelist("search_turn"), {"conversation": odd})
        assert turns.status_code == 200 and turns.context["cl"].result_count == 0, odd
    turn = conversation.turns.get(position=3)
    page = staff_client.get(reverse("admin:search_turn_change", args=[turn.pk]))
    assert page.status_code == 200 and "Question number 3?" in page_text(page)
