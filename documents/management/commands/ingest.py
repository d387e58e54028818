"""`manage.py ingest PATH|URL ... [--source NAME] [--recursive] [--no-embed]`.

A .zip (among the paths or in a folder) is unpacked: each file in it is a document of its own
(documents.archives), and the command prints a line per file of it, then the archive's totals.
Files are stored in batches (one transaction per batch; a batch that fails is stored file by
file), then the new chunks are embedded (unless --no-embed). With a remote embedder
(EMBEDDING_BACKEND=openai) every full batch of new chunks is embedded in a thread while the next
files are stored (vectors.foreground.embeds_alongside says why not with the local model). The
embedding is the vectors app's, reached through documents.signals.foreground_embedding.
"""

from __future__ import annotations

import mimetypes
import os
import time
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from documents.archives import REFUSED, ArchiveIsDocument, ArchiveReport, FileReport, archive_ingest, is_archive
from documents.maintenance import tables_analyze
from documents.models import Source
from documents.services import INGEST_BATCH_DOCUMENTS, IngestError, document_ingest_many, source_get_or_create
from documents.signals import changes_batched, foreground_embedding_start
from ragsite.progress import counted, progress_bar


class Command(BaseCommand):
    help = (
        "Ingest files, folders, .zip archives or URLs into a source; then (or, with a remote embedder, meanwhile) "
        "embed the new chunks. Each file of a .zip is a document of its own, reported on a line of its own. "
        "Exits with an error only if nothing could be ingested (every input failed or was refused); "
        "inputs already stored unchanged count as ingested."
    )

    def add_arguments(self, parser):
        parser.add_argument("targets", nargs="+", metavar="PATH|URL")
        parser.add_argument("--source", default="uploads", help="source name (created if missing)")
        parser.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
        parser.add_argument("--no-embed", action="store_true", help="store and keyword-index only; embed later")

    def handle(self, *args, targets, source, recursive, no_embed, **options):
        items, archives = self._collect(targets, recursive)
        if not items and not archives:
            raise CommandError("Nothing to ingest: no files found.")
        try:
            source.encode("utf-8")
        except UnicodeEncodeError:
            # argv bytes that are not UTF-8 arrive as lone surrogates, which PostgreSQL cannot store
            raise CommandError("--source: the name is not valid UTF-8.") from None
        try:
            src = source_get_or_create(name=source, kind=Source.Kind.UPLOAD)
        except IngestError as exc:
            raise CommandError(exc.message) from exc

        counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0, "chunks_added": 0}
        failures: list[str] = []
        reports: list[tuple[str, ArchiveReport]] = []
        # With a remote embedder, full batches of new chunks go to it while the next files are
        # parsed and stored (vectors.alongside); a local model embeds after storing, because
        # storing would take its CPU (vectors.foreground.embeds_alongside).
        embedding = None if no_embed else foreground_embedding_start()
        try:
            with changes_batched(embed_here=embedding is not None):
                with progress_bar(len(items) + len(archives), "ingest", "file") as bar:
                    if embedding is not None:
                        embedding.watch(bar)

                    def count(label, result) -> None:
                        if isinstance(result, IngestError):
                            counts["failed"] += 1
                            failures.append(f"{label}: {result.message}")
                        else:
                            key = "created" if result.created else ("updated" if result.changed else "unchanged")
                            counts[key] += 1
                            counts["chunks_added"] += result.chunks_added
                            if embedding is not None:
                                embedding.stored(result.chunks_added)

                    for batch in _batches(items, failures, counts, bar):
                        results = document_ingest_many(source=src, items=[kwargs for _, kwargs in batch])
                        for (label, _), result in zip(batch, results, strict=True):
                            count(label, result)
                            bar.update(1)
                    for path in archives:
                        report = _archive(path, src, counts, failures, bar, embedding, count)
                        if report is not None:
                            reports.append((str(path), report))
                for label, report in reports:
                    for item in report.files:
                        out = self.stderr if item.status == REFUSED else self.stdout
                        out.write(f"{label}: {item.name}: {_describe(item)}")
                    self.stdout.write(f"{label}: {report.summary()}")
                for line in failures:
                    self.stderr.write(f"failed: {line}")
                self.stdout.write(
                    "ingested into source {!r}: {created} created, {updated} updated, {unchanged} unchanged, "
                    "{failed} failed; {new}".format(
                        src.name, new=counted(counts["chunks_added"], "new chunk"), **counts
                    )
                )
                tables_analyze()  # new rows in bulk: give the planner their statistics now
                if embedding is not None:
                    # Before the batched point deletions are announced, so none can overtake an upsert.
                    embedding.finish(self.stdout, self.stderr)
        except BaseException:
            if embedding is not None:
                embedding.abort()  # what is stored stays; its chunks stay pending for the next sync
            raise
        if counts["failed"] and not (counts["created"] or counts["updated"] or counts["unchanged"]):
            raise CommandError("every input failed")

    def _collect(self, targets: list[str], recursive: bool) -> tuple[list, list[Path]]:
        """(files and URLs to read, as (label, loader)), (.zip archives to unpack)."""
        items, archives = [], []
        for target in targets:
            scheme = urlparse(target).scheme
            if scheme in ("http", "https"):
                items.append((target, lambda url=target: _fetch(url)))
                continue
            if scheme and len(scheme) > 1:
                raise CommandError(f"{target}: unsupported URL scheme {scheme!r} (use http, https or a file path)")
            path = Path(target)
            if not path.exists():
                raise CommandError(f"{target}: no such file or folder")
            if path.is_dir():
                files = path.rglob("*") if recursive else path.iterdir()
                found = sorted(f for f in files if f.is_file() and not _hidden(f, path))
            else:
                found = [path]
            for file in found:
                if _is_archive(file):
                    archives.append(file)
                else:
                    items.append((str(file), lambda f=file: _read(f)))
        return items, archives


# Files are stored in batches (documents.services.document_ingest_many: one transaction, one
# statement per step for the whole batch instead of six round trips per file), of at most
# INGEST_BATCH_DOCUMENTS files or this many bytes read, whichever comes first.
BATCH_BYTES = 16 * 1024 * 1024


def _batches(items, failures: list[str], counts: dict, bar):
    """Load the items in order and yield them in batches of ``(label, kwargs)``; a failed load is counted here."""
    batch: list[tuple[str, dict]] = []
    size = 0
    for label, load in items:
        try:
            kwargs = load()
        except (IngestError, OSError, CommandError) as exc:
            counts["failed"] += 1
            failures.append(f"{label}: {getattr(exc, 'message', exc)}")
            bar.update(1)
            continue
        batch.append((label, kwargs))
        size += len(kwargs.get("data") or b"") + len((kwargs.get("text") or "").encode())
        if len(batch) >= INGEST_BATCH_DOCUMENTS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _is_archive(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError:
        return False  # reading it as a file reports why
    mime, _ = mimetypes.guess_type(path.name)
    return is_archive(name=path.name, content_type=mime or "", head=head)


def _archive(path: Path, source: Source, counts: dict, failures: list[str], bar, embedding, count):
    """Unpack one archive into ``source``, counting each of its files; its report, or None when the
    archive as a whole failed (or was an Office/EPUB file, ingested as one document)."""
    label = str(path)
    entries = 1

    def on_open(n: int) -> None:
        nonlocal entries
        entries = n
        bar.total += n - 1
        bar.refresh()

    def on_file(item: FileReport) -> None:
        bar.update(1)
        if item.status == REFUSED:
            counts["failed"] += 1
            return
        counts["created" if item.created else "updated" if item.status == "ingested" else "unchanged"] += 1
        counts["chunks_added"] += item.chunks_added
        if embedding is not None and item.chunks_added:
            embedding.stored(item.chunks_added)

    try:
        report = archive_ingest(
            source=source, archive=path, name=path.name, url=path.resolve().as_uri(), on_open=on_open, on_file=on_file
        )
    except ArchiveIsDocument:
        try:
            kwargs = _read(path)
        except (IngestError, OSError) as exc:
            count(label, exc if isinstance(exc, IngestError) else IngestError(str(exc)))
        else:
            count(label, document_ingest_many(source=source, items=[kwargs])[0])
        bar.update(1)
        return None
    except (IngestError, OSError) as exc:
        counts["failed"] += 1
        failures.append(f"{label}: {getattr(exc, 'message', exc)}")
        bar.update(1)
        return None
    # Folders and skipped files had no line of their own.
    bar.total -= entries - len(report.files)
    bar.refresh()
    if not report.files:
        counts["failed"] += 1
        failures.append(f"{label}: the archive holds no file to ingest ({report.skipped} skipped)")
    return report


def _describe(item: FileReport) -> str:
    if item.status == REFUSED:
        return f"refused ({item.code}): {item.reason}"
    if item.status == "unchanged":
        return f"unchanged (document {item.document_id}, {counted(item.chunks, 'chunk')})"
    verb = "ingested as new document" if item.created else "ingested, updating document"
    return f"{verb} {item.document_id} ({counted(item.chunks, 'chunk')})"


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def _read(path: Path) -> dict:
    size = path.stat().st_size
    if size > settings.INGEST_MAX_BYTES:
        raise IngestError(f"{size} bytes is over the limit of {settings.INGEST_MAX_BYTES} (INGEST_MAX_BYTES)")
    mime, _ = mimetypes.guess_type(path.name)
    return {
        "data": path.read_bytes(),
        # A name that is not UTF-8 (from a Latin-1 file system, say) holds lone surrogates, which
        # neither the tokenizer nor PostgreSQL accept: shown with replacement characters instead.
        "filename": os.fsencode(path.name).decode("utf-8", "replace"),
        "mime": mime or "",
        "url": path.resolve().as_uri(),
        "keep_file": True,
    }


def _fetch(url: str) -> dict:
    """Download one URL with the crawler's guards (ragsite.outbound): no private addresses unless
    CRAWL_ALLOW_PRIVATE_ADDRESSES, on any redirect hop too (checked at connect time); the body
    capped at INGEST_MAX_BYTES after decoding every Content-Encoding layer; the whole download
    within TOTAL_TIMEOUT_FACTOR x CRAWL_TIMEOUT."""
    import httpx

    from ragsite import outbound

    limit = settings.INGEST_MAX_BYTES
    allow_private = outbound.allow_private_default()
    total = settings.CRAWL_TIMEOUT * outbound.TOTAL_TIMEOUT_FACTOR
    try:
        outbound.check_url_safety(url, allow_private=allow_private)
        with (
            httpx.Client(
                transport=outbound.guarded_transport(allow_private=allow_private, max_connections=2),
                headers={"User-Agent": settings.CRAWL_USER_AGENT, "Accept-Encoding": outbound.ACCEPT_ENCODING},
                timeout=settings.CRAWL_TIMEOUT,
                follow_redirects=True,
                max_redirects=settings.CRAWL_MAX_REDIRECTS,
                trust_env=False,  # a proxy from the environment would be connected to instead, unvetted
            ) as client,
            outbound.read_limits(deadline=time.monotonic() + total),
            client.stream("GET", url) as response,
        ):
            if response.status_code >= 400:
                raise IngestError(f"HTTP {response.status_code}")
            body = bytearray()
            for piece in outbound.iter_decoded(response.iter_raw(), response.headers.get("content-encoding", "")):
                body += piece
                if len(body) > limit:
                    raise IngestError(
                        f"the response is over the limit of {limit} bytes once decoded (INGEST_MAX_BYTES)"
                    )
            # With its charset parameter, which parsing honours.
            return {"data": bytes(body), "mime": response.headers.get("content-type", ""), "url": str(response.url)}
    except outbound.UnsafeURL as exc:
        raise IngestError(f"refused: {exc}") from exc
    except outbound.ContentDecodingError as exc:
        raise IngestError(str(exc)) from exc
    except httpx.TooManyRedirects as exc:
        raise IngestError(f"more than {settings.CRAWL_MAX_REDIRECTS} redirects (CRAWL_MAX_REDIRECTS)") from exc
    except httpx.TimeoutException as exc:
        raise IngestError(
            f"timed out (CRAWL_TIMEOUT is {settings.CRAWL_TIMEOUT:g} s a read, {total:g} s in all)"
        ) from exc
    except httpx.HTTPError as exc:
        raise IngestError(f"could not fetch: {exc}") from exc
