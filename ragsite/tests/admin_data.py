"""Rows for the admin's tests: long titles, URLs and errors, documents with many chunks, crawl jobs
with many pages, in every state. Written with bulk_create: no parsing, chunking or embedding."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.utils import timezone

from accounts.auth import api_key_create
from crawl.models import CrawlJob, CrawlPage
from documents.models import Chunk, Document, Source
from search.models import Conversation, Turn
from vectors.models import EmbeddingCache

LONG_URL = "https://docs.example.com/" + "a-rather-long-path-segment-without-spaces-" * 8 + "index.html"
LONG_TITLE = "A very long document title that goes on and on " * 5
LONG_ERROR = "ConnectError: the embedding service did not answer in time. " * 40
PARAGRAPH = "A paragraph of the manual, long enough to wrap over several lines of a table cell. " * 4
STATES = [Chunk.IndexStatus.INDEXED, Chunk.IndexStatus.PENDING, Chunk.IndexStatus.FAILED]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def chunks_add(document: Document, count: int, *, states=STATES) -> None:
    """``count`` chunks cycling through ``states``; failed ones carry a long error."""
    Chunk.objects.bulk_create(
        Chunk(
            document=document,
            ordinal=n,
            text=f"{n}: {PARAGRAPH}",
            context=document.title,
            token_count=60,
            content_hash=_digest(f"{document.pk}:{n}"),
            index_status=states[n % len(states)],
            last_error=LONG_ERROR if states[n % len(states)] == Chunk.IndexStatus.FAILED else "",
            heading_path=["Part one", "A chapter with a long heading " * 3],
        )
        for n in range(count)
    )


def document_add(source: Source, n: int, *, chunks: int = 3, **fields) -> Document:
    fields.setdefault("title", f"{LONG_TITLE} {n}")
    fields.setdefault("url", f"{LONG_URL}?page={n}")
    fields.setdefault("text", f"Text {n}. {PARAGRAPH}")
    # bulk_create sends no post_save: nothing announces the chunks, so no sync embeds them and each
    # keeps the state it is written with (the browser tests commit for real).
    [document] = Document.objects.bulk_create([Document(source=source, content_hash=_digest(fields["text"]), **fields)])
    chunks_add(document, chunks)
    return document


def crawl_job_add(source: Source, *, pages: int = 3, **fields) -> CrawlJob:
    fields = {
        "start_url": LONG_URL,
        "status": CrawlJob.Status.FAILED,
        "error": LONG_ERROR,
        "fetched_count": 40,
        "failed_count": 3,
        "discovered_count": 120,
        **fields,
    }
    job = CrawlJob.objects.create(source=source, **fields)
    CrawlPage.objects.bulk_create(
        CrawlPage(
            job=job,
            url=f"{LONG_URL}?n={n}",
            status=CrawlPage.Status.QUEUED if n % 2 else CrawlPage.Status.FAILED,
            http_status=None if n % 2 else 503,
            error="" if n % 2 else LONG_ERROR,
        )
        for n in range(pages)
    )
    return job


def admin_rows(count: int, *, prefix: str = "handbook") -> dict:
    """``count`` rows of every model the project's admin shows, with long values everywhere."""
    sources = [
        Source.objects.create(name=f"{prefix}-{n}-" + "x" * 80, kind=Source.Kind.CRAWL, base_url=LONG_URL)
        for n in range(count)
    ]
    documents = [document_add(sources[n % len(sources)], n) for n in range(count)]
    jobs = [crawl_job_add(sources[n % len(sources)]) for n in range(count)]
    for n in range(count):
        api_key_create(name=f"integration key {n} for the nightly export job " * 3, scope="write")
    EmbeddingCache.objects.bulk_create(
        EmbeddingCache(
            model="sentence-transformers/all-MiniLM-L6-v2-onnx-int8",
            content_hash=_digest(f"{prefix}{n}"),
            dimension=4,
            vector=b"\0" * 16,
        )
        for n in range(count)
    )
    for n in range(count):
        conversation = Conversation.objects.create(owner=f"user:{n}", title=LONG_TITLE[:190] + str(n))
        Turn.objects.bulk_create(
            Turn(
                conversation=conversation,
                position=p,
                question=LONG_TITLE,
                searched_for=LONG_TITLE,
                rewritten_by="none",
                answer=LONG_ERROR,
                status="answered",
                mode="hybrid",
                provider="extractive",
            )
            for p in range(2)
        )
    return {"sources": sources, "documents": documents, "jobs": jobs}


SHOWCASE_DOCUMENTS = [
    ("Getting started with the deployment pipeline", "https://handbook.example.com/deploy/getting-started"),
    ("On-call runbook: database failover", "https://handbook.example.com/oncall/database-failover"),
    ("Writing good incident reviews", "https://handbook.example.com/process/incident-reviews"),
    ("Release checklist for mobile apps", "https://handbook.example.com/mobile/release-checklist"),
    ("How we estimate work", "https://handbook.example.com/process/estimation"),
    ("Security review: third-party libraries", "https://handbook.example.com/security/dependencies"),
    ("Local development on Apple silicon", "https://handbook.example.com/dev/apple-silicon"),
    ("Service level objectives and error budgets", "https://handbook.example.com/sre/slo"),
]


def admin_showcase(*, chunks: int = 300) -> dict:
    """What the browser test and the screenshots show: a realistic handbook, one long PDF, crawls in
    every state, and rows with very long titles, URLs and errors that must not widen any page."""
    long_rows = admin_rows(2, prefix="zz-long")  # one of everything with long values, two days old
    Document.objects.filter(pk__in=[d.pk for d in long_rows["documents"]]).update(
        updated_at=timezone.now() - timedelta(days=2)
    )
    handbook = Source.objects.create(
        name="Engineering handbook", kind=Source.Kind.CRAWL, base_url="https://handbook.example.com/"
    )
    uploads = Source.objects.create(name="Uploaded manuals", kind=Source.Kind.UPLOAD)
    states = Chunk.IndexStatus
    mixes = [[states.INDEXED], [states.INDEXED], [states.INDEXED, states.PENDING], [states.INDEXED]]
    documents = []
    for n, (title, url) in enumerate(SHOWCASE_DOCUMENTS):
        document = document_add(handbook, n, chunks=0, title=title, url=url, mime_type="text/html")
        chunks_add(document, 6 + 5 * n, states=mixes[n % len(mixes)])
        documents.append(document)
    failing = document_add(
        handbook,
        50,
        chunks=0,
        title="Architecture decision records (index)",
        url="https://handbook.example.com/architecture/decisions",
        mime_type="text/html",
    )
    chunks_add(failing, 9, states=[states.INDEXED, states.INDEXED, states.FAILED])
    big = document_add(
        uploads, 999, chunks=0, title="Operations manual 2026 (PDF)", url="", mime_type="application/pdf"
    )
    chunks_add(big, chunks, states=[states.INDEXED] * 5 + [states.PENDING])
    crawl_job_add(
        handbook,
        pages=40,
        start_url="https://handbook.example.com/",
        status=CrawlJob.Status.RUNNING,
        error="",
        heartbeat_at=timezone.now(),
        started_at=timezone.now() - timedelta(minutes=3),
    )
    crawl_job_add(
        handbook, pages=8, start_url="https://handbook.example.com/", status=CrawlJob.Status.SUCCEEDED, error=""
    )
    crawl_job_add(uploads, pages=6)  # failed, with a long URL and a long error
    api_key_create(name="Nightly export", scope="read")
    api_key_create(name="integration key for the nightly export job " * 3, scope="write")
    # Edited at different times, the latest first in the list.
    for n, document in enumerate([big, failing, *documents]):
        Document.objects.filter(pk=document.pk).update(updated_at=timezone.now() - timedelta(minutes=7 + 95 * n))
    return {"documents": documents, "failing": failing, "big_document": big}
