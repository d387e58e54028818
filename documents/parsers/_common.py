"""What every format parser shares: input bounds, the zip guard, and the text/section builder.

The limits are constants, not settings: they only keep one hostile file from taking the
worker's memory or time, and sit well above any real document (uploads are already capped by
INGEST_MAX_BYTES, 20 MiB by default).
"""

from __future__ import annotations

import io
import re
import zipfile

from documents.parsers.base import (
    TITLE_MAX_CHARS,
    ParsedDocument,
    Section,
    UnreadableContent,
    clean_inline,
    normalize_text,
)

# Text a single document may yield: the same order as INGEST_MAX_BYTES, so a 20 MiB spreadsheet
# that unpacks into hundreds of MB of cells is refused instead of filling memory and the database.
MAX_TEXT_CHARS = 20_000_000
# Office/EPUB/ODF files are zips; these bound what they may unpack to before any library reads
# them. Real files: a few hundred members, and XML rarely past 20x its compressed size.
MAX_ZIP_MEMBERS = 10_000
MAX_ZIP_UNCOMPRESSED_BYTES = 300 * 1024 * 1024
MAX_ZIP_MEMBER_RATIO = 200  # uncompressed/compressed of one member; real XML stays below ~50
# Markdown table blocks: each starts with the header row again, and stays well under one chunk
# (CHUNK_SIZE_TOKENS 256 ~ 1000 characters) so any chunk of a table holds a header line.
TABLE_BLOCK_CHARS = 500
TABLE_BLOCK_ROWS = 20

_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ODT = "application/vnd.oasis.opendocument.text"
EPUB = "application/epub+zip"


def too_much_text(kind: str) -> UnreadableContent:
    return UnreadableContent(
        f"The {kind} holds more than {MAX_TEXT_CHARS:,} characters of text, the most one document "
        "may have; split it into smaller files."
    )


def pick_title(*candidates: str) -> str:
    for candidate in candidates:
        candidate = clean_inline(candidate or "")
        if candidate:
            return candidate[:TITLE_MAX_CHARS].rstrip()
    return ""


# --- Zip containers -----------------------------------------------------------------------------


def refuse_non_zip(data: bytes, kind: str) -> None:
    """Explain the common ways an Office upload is not the zip it claims to be."""
    if data.startswith(_CFB_MAGIC):
        # Password-protected OOXML files are not zips at all: Office wraps the encrypted package in
        # an OLE compound file whose directory names an "EncryptedPackage" stream (UTF-16 names).
        if "EncryptedPackage".encode("utf-16-le") in data:
            raise UnreadableContent(f"The {kind} file is password-protected (encrypted); upload an unprotected copy.")
        raise UnreadableContent(
            f"The file is in a legacy binary Office format (.doc/.ppt/.xls), not {kind}; save it as {kind} first."
        )
    if not data.startswith(_ZIP_MAGIC):
        raise UnreadableContent(f"The {kind} file is corrupt: it is not a zip container as {kind} files are.")


def open_zip(data: bytes, kind: str) -> zipfile.ZipFile:
    """Open `data` as a zip after checking it cannot unpack into more than the limits allow.

    Declared sizes can be trusted here because every library used reads members through
    `zipfile`, whose readers stop at the declared size (and fail the CRC check) whatever the
    compressed stream would inflate to.
    """
    refuse_non_zip(data, kind)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise UnreadableContent(f"The {kind} file is corrupt (its zip container is damaged: {exc}).") from exc
    if len(members) > MAX_ZIP_MEMBERS:
        raise UnreadableContent(
            f"The {kind} file has {len(members):,} parts inside; the limit is {MAX_ZIP_MEMBERS:,} "
            "(it may be a zip bomb)."
        )
    total = 0
    for member in members:
        if member.flag_bits & 0x1:
            raise UnreadableContent(f"The {kind} file is password-protected (encrypted); upload an unprotected copy.")
        total += member.file_size
        if member.file_size > 1_000_000 and member.file_size > MAX_ZIP_MEMBER_RATIO * max(member.compress_size, 1):
            raise UnreadableContent(
                f"The {kind} file has a part ({member.filename[:100]}) that unpacks {member.file_size // member.compress_size:,}"
                " times larger than it is stored; refused as a likely zip bomb."
            )
    if total > MAX_ZIP_UNCOMPRESSED_BYTES:
        raise UnreadableContent(
            f"The {kind} file unpacks to {total / 1024 / 1024:,.0f} MB; the limit is "
            f"{MAX_ZIP_UNCOMPRESSED_BYTES // 1024 // 1024} MB (it may be a zip bomb)."
        )
    return archive


def read_member(archive: zipfile.ZipFile, name: str, limit: int = 10_000_000) -> bytes | None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > limit:
        return None
    with archive.open(info) as handle:
        return handle.read(limit)


def sniff_office(data: bytes) -> str | None:
    """The MIME type of a DOCX, PPTX, XLSX, ODT or EPUB file, told from its zip members, or None.

    ODF and EPUB store their type in a first member named `mimetype`; OOXML lists its main part
    in `[Content_Types].xml`. Only the central directory and those two small members are read.
    """
    if not data.startswith(_ZIP_MAGIC):
        return None
    try:
        return office_type(zipfile.ZipFile(io.BytesIO(data)))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, NotImplementedError, RuntimeError):
        # RuntimeError: zipfile's "encrypted, password required" for the member it tried to read.
        return None


def office_type(archive: zipfile.ZipFile) -> str | None:
    """`sniff_office` for a zip already open (documents.archives asks it of an uploaded .zip);
    raises what zipfile raises for a damaged member."""
    names = set(archive.namelist()[:MAX_ZIP_MEMBERS])
    mimetype = (read_member(archive, "mimetype", 200) or b"").decode("ascii", "replace").strip()
    content_types = read_member(archive, "[Content_Types].xml", 1_000_000) or b""
    if mimetype in (ODT, EPUB):
        return mimetype
    if mimetype.startswith("application/vnd.oasis.opendocument."):
        return None  # spreadsheets, presentations: not parsed (yet)
    if content_types:
        for marker, kind in (
            (b"wordprocessingml.document.main", DOCX),
            (b"wordprocessingml.template.main", DOCX),
            (b"presentationml.presentation.main", PPTX),
            (b"presentationml.slideshow.main", PPTX),
            (b"spreadsheetml.sheet.main", XLSX),
            (b"spreadsheetml.template.main", XLSX),
        ):
            if marker in content_types:
                return kind
        # Some writers omit the override and rely on the default extension mapping.
        for part, kind in (("word/document.xml", DOCX), ("ppt/presentation.xml", PPTX), ("xl/workbook.xml", XLSX)):
            if part in names:
                return kind
    if "META-INF/container.xml" in names and mimetype == "":
        return EPUB
    return None


# --- Building text and sections -----------------------------------------------------------------


class DocumentBuilder:
    """Collects sections of text blocks into one normalised text with exact Section spans.

    Blocks inside a section, and sections, are joined by one blank line, so the joined text is
    itself normalised and `text[s.char_start:s.char_end] == s.text` holds for every section.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._sections: list[Section] = []
        self._parts: list[str] = []
        self._length = 0  # of "\n\n".join(self._parts)
        self._pending = 0  # characters in self._blocks, separators included
        self._blocks: list[str] = []
        self._path: list[str] = []
        self._page: int | None = None

    def start_section(self, heading_path: list[str], *, page: int | None = None) -> None:
        self._flush()
        self._path = [clean_inline(h)[:TITLE_MAX_CHARS] for h in heading_path if clean_inline(h)]
        self._page = page

    def add(self, text: str) -> None:
        block = normalize_text(text)
        if not block.strip():
            return
        self._pending += len(block) + 2
        if self._length + self._pending > MAX_TEXT_CHARS:
            raise too_much_text(self.kind)
        self._blocks.append(block)

    def add_table(self, rows: list[list[str]]) -> None:
        for block in markdown_table_blocks(rows):
            self.add(block)

    def _flush(self) -> None:
        if not self._blocks:
            return
        text = "\n\n".join(self._blocks)
        start = self._length + 2 if self._parts else 0
        self._sections.append(
            Section(
                heading_path=list(self._path), text=text, char_start=start, char_end=start + len(text), page=self._page
            )
        )
        self._parts.append(text)
        self._length = start + len(text)
        self._blocks = []
        self._pending = 0

    def build(self, *, title: str, mime_type: str, metadata: dict | None = None) -> ParsedDocument:
        self._flush()
        return ParsedDocument(
            title=title,
            text="\n\n".join(self._parts),
            mime_type=mime_type,
            sections=self._sections,
            metadata=metadata or {},
        )

    @property
    def empty(self) -> bool:
        return not self._parts and not self._blocks


_PIPE = re.compile(r"\|")


def _cell(value: str) -> str:
    return _PIPE.sub(r"\|", clean_inline(value))


def markdown_table_blocks(rows: list[list[str]]) -> list[str]:
    """Markdown table text for `rows` (the first is the header), cut into blocks of a few rows
    that each start with the header again, so a chunk cut anywhere in a long table still says
    which column is which."""
    rows = [[_cell(c) for c in row] for row in rows]
    rows = [row for row in rows if any(row)]
    if not rows:
        return []
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    header = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * width
    if len(rows) == 1:
        return [header]
    blocks: list[str] = []
    current: list[str] = []
    size = len(header)
    for row in rows[1:]:
        line = "| " + " | ".join(row) + " |"
        if current and (size + len(line) > TABLE_BLOCK_CHARS or len(current) >= TABLE_BLOCK_ROWS):
            blocks.append(header + "\n" + "\n".join(current))
            current, size = [], len(header)
        current.append(line)
        size += len(line) + 1
    blocks.append(header + "\n" + "\n".join(current))
    return blocks
