"""A .zip archive as input: each file in it becomes a document of its own, with a report per file.

Used by the API upload (documents.api) and ``manage.py ingest`` alike. Every file goes through the
one ingest service (``document_ingest_many``: the same parsing, limits, originals and
unchanged-content detection as any upload), named by its path inside the archive. That path is
a label only: nothing is ever written to disk under it (an original goes to the content-addressed
file store, documents.files).

Bounded, and never on the archive's word alone:
- the central directory is sized from the end record before zipfile reads it (a 20 MB archive of
  empty entries would otherwise take seconds and ~100 MB to list); at most INGEST_ZIP_MAX_FILES
  entries;
- each file is inflated in pieces, stopping past INGEST_MAX_BYTES whatever its header declared,
  and the archive's files together past INGEST_ZIP_MAX_BYTES; a file declared larger is refused
  without inflating a byte of it;
- files are stored in batches whose bytes add up to at most INGEST_MAX_BYTES, so memory holds
  one largest file's worth of archive content at a time.
A file that cannot be ingested is refused with its reason and the others go on; a failing batch
is stored file by file by the service, so no document is ever half stored. With ``defer_ocr``
(the API upload) a file that needs OCR is checked, kept and reported ``processing``: the task
worker reads it (documents.tasks), as it does a single scanned upload.
"""

from __future__ import annotations

import mimetypes
import stat
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import quote

from django.conf import settings

from documents.models import Source
from documents.parsers import ACCEPTED_TYPES
from documents.parsers._common import office_type
from documents.parsers.registry import FORMATS
from documents.parsers.sniffing import binary_format
from documents.services import INGEST_BATCH_DOCUMENTS, IngestError, IngestResult, document_ingest_many
from documents.tasks import document_read_enqueue

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member's local header; an empty archive's end record
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip", "multipart/x-zip"})
# Refused inside an archive instead of unpacked: one level, no recursion.
NESTED_ARCHIVE_SUFFIXES = (".zip", ".7z", ".rar", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".jar", ".war")
_NESTED_ARCHIVE_TYPES = (
    "application/zip",
    "application/gzip",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/vnd.rar",
)
# Files operating systems leave beside real ones: skipped (counted, not listed).
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})
JUNK_FOLDERS = frozenset({"__macosx"})
NAME_MAX_CHARS = 500  # a file's path inside the archive; its title and url derive from it
# The compression methods zipfile reads: stored, deflate, bzip2, LZMA.
READABLE_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
READ_PIECE = 1 << 20
# A central directory entry: 46 bytes and the name, extra field and comment. Real archives
# average ~100 bytes an entry; this leaves room for long names without letting a directory of
# many small entries past the count it declares.
CENTRAL_DIRECTORY_BYTES_PER_FILE = 1024
_DOCUMENT_SUFFIXES = frozenset(extension for f in FORMATS for extension in f.extensions)

INGESTED, PROCESSING, UNCHANGED, REFUSED = "ingested", "processing", "unchanged", "refused"


class ArchiveIsDocument(Exception):
    """The zip is an Office/ODF/EPUB file (a DOCX named .zip, say): ingest it as one document."""


@dataclass
class FileReport:
    """What became of one file of the archive."""

    index: int  # its place in the archive's directory: the report's order
    name: str
    status: str  # ingested, processing (read by the task worker), unchanged or refused
    document_id: int | None = None
    title: str = ""
    chunks: int = 0
    created: bool = False
    chunks_added: int = 0
    code: str = ""  # why it was refused: a short machine-readable word
    reason: str = ""  # and in a sentence

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "document_id": self.document_id,
            "title": self.title,
            "chunks": self.chunks,
            "created": self.created,
            "code": self.code,
            "reason": self.reason,
        }


@dataclass
class ArchiveReport:
    archive: str
    source: str
    files: list[FileReport] = field(default_factory=list)
    skipped: int = 0  # folders' metadata and hidden files (__MACOSX/, .DS_Store, Thumbs.db...)

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def totals(self) -> dict:
        return {
            "files": len(self.files),
            INGESTED: self.count(INGESTED),
            PROCESSING: self.count(PROCESSING),
            UNCHANGED: self.count(UNCHANGED),
            REFUSED: self.count(REFUSED),
            "skipped": self.skipped,
            "chunks": sum(f.chunks for f in self.files if f.status != REFUSED),
        }

    def as_dict(self) -> dict:
        return {
            "archive": self.archive,
            "source": self.source,
            "files": [f.as_dict() for f in self.files],
            "totals": self.totals,
        }

    def summary(self) -> str:
        t = self.totals
        processing = f"{t[PROCESSING]} processing, " if t[PROCESSING] else ""
        return (
            f"{t['files']} file{'s' if t['files'] != 1 else ''}: {t[INGESTED]} ingested, {processing}"
            f"{t[UNCHANGED]} unchanged, {t[REFUSED]} refused; {t['skipped']} skipped"
        )


def is_archive(*, name: str, content_type: str, head: bytes) -> bool:
    """Whether an upload or a file is a .zip to unpack: named or labelled so, or zip bytes whose
    name and type do not say they are a document format (DOCX, EPUB... are zips too)."""
    suffix = PurePosixPath(name or "").suffix.lower()
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if suffix == ".zip" or declared in ZIP_TYPES:
        return True
    return head.startswith(ZIP_MAGICS) and suffix not in _DOCUMENT_SUFFIXES and declared not in ACCEPTED_TYPES


def archive_ingest(
    *,
    source: Source,
    archive: BinaryIO | Path,
    name: str,
    url: str = "",
    metadata: dict | None = None,
    on_open: Callable[[int], None] | None = None,
    on_file: Callable[[FileReport], None] | None = None,
    defer_ocr: bool = False,
) -> ArchiveReport:
    """Ingest every file of the zip ``archive`` (a seekable binary file, or a path) into ``source``.

    Each file's name is its path inside the archive; with ``url`` (where the archive came from)
    each file's url is ``url#path``, so ingesting a changed archive again updates its files in
    place; without one, a file is known by its content, as any upload without a url.
    ``metadata`` goes to every file. ``on_open`` learns the number of entries once the archive
    is open, ``on_file`` each file's report as soon as it is decided (commands show progress).
    With ``defer_ocr`` (uploads over HTTP), files that need OCR are kept and read by the task
    worker, reported ``processing``; without (``manage.py ingest``) they are read here.
    Raises IngestError (field ``file``) when the archive as a whole is unreadable or over the
    limits, and ArchiveIsDocument when it is an Office/ODF/EPUB file.
    """
    report = ArchiveReport(archive=name, source=source.name)
    with _archive_open(archive) as opened:
        try:
            is_document = office_type(opened) is not None
        except (zipfile.BadZipFile, ValueError, EOFError, OSError, NotImplementedError, RuntimeError):
            is_document = False  # a damaged or encrypted member: it shows in that file's report
        if is_document:
            raise ArchiveIsDocument(name)
        entries = opened.infolist()
        _refuse_too_many(len(entries))
        if on_open is not None:
            on_open(len(entries))
        batch = _Batch(source, url=url, metadata=metadata, defer_ocr=defer_ocr)
        for item in _files(opened, entries, report):
            if isinstance(item, FileReport):
                _add(report, item, on_file)
                continue
            if not batch.fits(item):
                for done in batch.store():
                    _add(report, done, on_file)
            batch.append(item)
        for done in batch.store():
            _add(report, done, on_file)
    report.files.sort(key=lambda f: f.index)
    return report


def _add(report: ArchiveReport, item: FileReport, on_file) -> None:
    report.files.append(item)
    if on_file is not None:
        on_file(item)


# --- Opening -------------------------------------------------------------------------------------


@contextmanager
def _archive_open(archive: BinaryIO | Path) -> Iterator[zipfile.ZipFile]:
    """``zipfile.ZipFile`` over a path or a file, once the end record said its directory is small."""
    with ExitStack() as stack:
        stream = stack.enter_context(archive.open("rb")) if isinstance(archive, Path) else archive
        try:
            stream.seek(0)
            _check_central_directory(stream)
            stream.seek(0)
            opened = stack.enter_context(zipfile.ZipFile(stream))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, UnicodeDecodeError) as exc:
            raise IngestError(
                f"The file is not a readable zip archive ({_plain(exc)}).", field="file", code="invalid_archive"
            ) from exc
        yield opened


def _check_central_directory(stream: BinaryIO) -> None:
    """Refuse an archive whose directory lists too many entries, before zipfile reads them all.

    zipfile reads the whole central directory into memory and builds an object per entry when it
    opens an archive, whatever it holds; its own end-record reader (``_EndRecData``) tells the
    directory's size and entry count first. Without it (another Python), the count is still
    checked once the archive is open.
    """
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:
        return
    record = end_record(stream)
    if record is None:
        raise zipfile.BadZipFile("no end of central directory record: it is not a zip file or is truncated")
    _refuse_too_many(record[zipfile._ECD_ENTRIES_TOTAL])
    limit = settings.INGEST_ZIP_MAX_FILES * CENTRAL_DIRECTORY_BYTES_PER_FILE
    if record[zipfile._ECD_SIZE] > limit:
        raise IngestError(
            f"The archive's directory is {record[zipfile._ECD_SIZE]:,} bytes, more than {settings.INGEST_ZIP_MAX_FILES:,} "
            "files need (INGEST_ZIP_MAX_FILES); refused unread.",
            field="file",
            code="too_many_files",
        )


def _refuse_too_many(entries: int) -> None:
    if entries > settings.INGEST_ZIP_MAX_FILES:
        raise IngestError(
            f"The archive lists {entries:,} entries; the limit is {settings.INGEST_ZIP_MAX_FILES:,} "
            "(INGEST_ZIP_MAX_FILES). Split it into smaller archives.",
            field="file",
            code="too_many_files",
        )


# --- Reading the files ---------------------------------------------------------------------------


@dataclass
class _File:
    index: int
    label: str
    data: bytes


def _files(archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], report: ArchiveReport) -> Iterator:
    """Each file of the archive, in order: a _File to ingest or a FileReport refusing it.

    Folders are passed over; operating-system leftovers and hidden files counted as skipped.
    """
    budget = settings.INGEST_ZIP_MAX_BYTES  # bytes the files may still unpack to, together
    seen: set[str] = set()
    for index, info in enumerate(entries):
        if info.is_dir():
            continue
        label, problem = member_label(info)
        if problem is None and _is_junk(label):
            report.skipped += 1
            continue
        refusal = ("unsafe_path", problem) if problem is not None else _refusal_unread(info, label, seen, budget)
        data = None
        if refusal is None:
            data, inflated, refusal = _unpack(archive, info, min(settings.INGEST_MAX_BYTES, budget))
            budget -= inflated
        if refusal is not None:
            yield FileReport(index=index, name=label, status=REFUSED, code=refusal[0], reason=refusal[1])
        else:
            yield _File(index, label, data)


def _refusal_unread(info: zipfile.ZipInfo, label: str, seen: set[str], budget: int) -> tuple[str, str] | None:
    """(code, reason) when the file is refused from its directory entry alone, without inflating it."""
    if label in seen:
        return "duplicate", "Another file of the archive has the same name; only the first one is read."
    seen.add(label)
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symlink", "A symbolic link: links are not followed."
    if info.flag_bits & 0x1:
        return "encrypted", "The file is encrypted (password-protected); add an unprotected copy."
    if info.compress_type not in READABLE_METHODS:
        return "unreadable", f"The file is compressed with a method this server cannot read ({info.compress_type})."
    if label.lower().endswith(NESTED_ARCHIVE_SUFFIXES):
        return "nested_archive", _NESTED
    if info.file_size > settings.INGEST_MAX_BYTES:
        return "too_large", _too_large(info.file_size)
    if info.file_size > budget:
        return "archive_too_large", _over_budget()
    return None


def _unpack(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> tuple[bytes | None, int, tuple | None]:
    """(the file's bytes, bytes inflated, None) or (None, bytes inflated, (code, reason))."""
    try:
        data = _read_capped(archive, info, cap)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
        # It may have inflated up to its declared size before the damage showed.
        return (
            None,
            info.file_size,
            ("unreadable", f"The file is damaged in the archive and cannot be unpacked ({_plain(exc)})."),
        )
    if data is None:
        # More than its header declared (zipfile itself stops there): a lying header.
        return (
            None,
            cap,
            ("unreadable", "The file unpacks to more than its header declares; refused as a likely zip bomb."),
        )
    if binary_format(data).startswith(_NESTED_ARCHIVE_TYPES):
        return None, len(data), ("nested_archive", _NESTED)
    return data, len(data), None


_NESTED = "An archive inside the archive: archives are unpacked one level only; add its files directly."


def _too_large(size: int) -> str:
    return f"The file is {size:,} bytes unpacked; the limit is {settings.INGEST_MAX_BYTES:,} bytes (INGEST_MAX_BYTES)."


def _over_budget() -> str:
    return (
        f"The archive's files unpack to more than {settings.INGEST_ZIP_MAX_BYTES:,} bytes together "
        "(INGEST_ZIP_MAX_BYTES); this one was not read."
    )


def _read_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes | None:
    """The file's bytes, inflated a piece at a time; None as soon as they pass ``cap``."""
    pieces: list[bytes] = []
    size = 0
    with archive.open(info) as handle:
        while piece := handle.read(min(READ_PIECE, cap + 1 - size)):
            size += len(piece)
            if size > cap:
                return None
            pieces.append(piece)
    return b"".join(pieces)


def member_label(info: zipfile.ZipInfo) -> tuple[str, str | None]:
    """(the file's path inside the archive, as a label; None) or (a printable name; why it is unsafe).

    Names without the UTF-8 flag were decoded by zipfile as CP437, the format's default; most
    tools that leave the flag unset write UTF-8 nonetheless, so a name that is valid UTF-8 is
    read as UTF-8. Backslashes (Windows tools) separate folders.
    """
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    name = name.replace("\\", "/")
    printable = "".join("?" if unicodedata.category(c) == "Cc" else c for c in name)[:NAME_MAX_CHARS]
    if any(unicodedata.category(c) == "Cc" for c in name):
        return printable, "The name holds control characters."
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isascii() and name[0].isalpha()):
        return printable, "An absolute path: names inside an archive must be relative."
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        return printable, "The path climbs out of the archive (..)."
    if not parts:
        return printable, "The file has no name."
    label = "/".join(parts)
    if len(label) > NAME_MAX_CHARS:
        return label[:NAME_MAX_CHARS] + "…", f"The name is longer than {NAME_MAX_CHARS} characters."
    return label, None


def _is_junk(label: str) -> bool:
    parts = label.split("/")
    return (
        parts[0].lower() in JUNK_FOLDERS
        or parts[-1].lower() in JUNK_FILES
        or any(part.startswith(".") for part in parts)
    )


def _plain(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


# --- Storing -------------------------------------------------------------------------------------

# The ingest service's error codes, as the report names them.
_CODES = {
    "UnsupportedContentType": "unsupported_type",
    "EmptyContent": "empty",
    "UnreadableContent": "unreadable",
    "TextTooLong": "too_large",
    "too_large": "too_large",
}


class _Batch:
    """Files waiting to be stored together: at most INGEST_BATCH_DOCUMENTS, INGEST_MAX_BYTES in all."""

    def __init__(self, source: Source, *, url: str, metadata: dict | None, defer_ocr: bool = False):
        self.source = source
        self.url = url.split("#", 1)[0]
        self.metadata = metadata
        self.defer_ocr = defer_ocr
        self.files: list[_File] = []
        self.size = 0

    def fits(self, item: _File) -> bool:
        if not self.files:
            return True
        return len(self.files) < INGEST_BATCH_DOCUMENTS and self.size + len(item.data) <= settings.INGEST_MAX_BYTES

    def append(self, item: _File) -> None:
        self.files.append(item)
        self.size += len(item.data)

    def store(self) -> list[FileReport]:
        if not self.files:
            return []
        items = [self._kwargs(f) for f in self.files]
        try:
            results: list[IngestResult | IngestError] = document_ingest_many(source=self.source, items=items)
        except IngestError as exc:  # the source was deleted meanwhile: nothing of this batch is stored
            results = [exc] * len(items)
        for result in results:
            if isinstance(result, IngestResult) and result.deferred:
                document_read_enqueue(result.document.pk)
        reports = [_result_report(f, result) for f, result in zip(self.files, results, strict=True)]
        self.files, self.size = [], 0
        return reports

    def _kwargs(self, item: _File) -> dict:
        mime, _ = mimetypes.guess_type(item.label, strict=False)
        return {
            "data": item.data,
            "filename": item.label,
            "mime": mime or "",
            "url": f"{self.url}#{quote(item.label, safe='/')}" if self.url else "",
            "metadata": self.metadata,
            "keep_file": True,
            "defer_ocr": self.defer_ocr,
        }


def _result_report(item: _File, result: IngestResult | IngestError) -> FileReport:
    if isinstance(result, IngestError):
        code = _CODES.get(result.code, "invalid")
        return FileReport(index=item.index, name=item.label, status=REFUSED, code=code, reason=result.message)
    document = result.document
    return FileReport(
        index=item.index,
        name=item.label,
        status=PROCESSING if result.deferred else INGESTED if result.changed else UNCHANGED,
        document_id=document.pk,
        title=document.title,
        chunks=result.chunks_added + result.chunks_kept,
        created=result.created,
        chunks_added=result.chunks_added,
    )
