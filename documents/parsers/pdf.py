"""PDF: one section per page (`page` = its number); pages without a text layer (scans) are read
by OCR (documents.parsers.ocr), at most PDF_OCR_MAX_PAGES of them per file.

pypdf opens the file (encryption, the page tree, the info title, a scan's images for OCR) and
PDFium (pypdfium2) extracts each page's text: pypdf's pure-Python content-stream interpreter took
~10 ms a page, PDFium ~1.8 ms for the same words in the same order, with justified lines' word
spacing as single spaces (bench/results/formats_ingest.md). A page PDFium cannot read, or finds
no text on, is extracted by pypdf as before, and a file PDFium cannot open (or counts pages of
differently) is extracted by pypdf throughout.

Inside ``ocr_deferred()`` (an upload over HTTP) no page is read by OCR: the text layer of every
page is still extracted (the same bounded work as a text PDF), and if any page would need OCR the
parse ends with ``NeedsOcr`` counting them (at most PDF_OCR_MAX_PAGES), for the task worker to
read the file later.

Bounded: extraction stops as soon as the text passes `max_chars`, and a page object the page
tree lists thousands of times is extracted once (a 30 KB file once became 27 million characters).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from documents.parsers.base import (
    APPLICATION_PDF,
    EmptyContent,
    ParsedDocument,
    ParseError,
    Section,
    UnreadableContent,
    cap_title,
    clean_inline,
    first_line_title,
    name_title,
    normalize_text,
    too_long,
)
from documents.parsers.ocr import NeedsOcr, ocr_pdf_page_images

logger = logging.getLogger(__name__)

# Scanned pages OCR'd per PDF: OCR takes ~12 s a page on 2 shared cores (bench/results/formats.md),
# so this bounds one file at a few minutes of a worker. Textless pages past it are listed in the
# metadata ("ocr_skipped_pages") and the rest of the document is still stored.
PDF_OCR_MAX_PAGES = 10

# PDFium is not thread-safe (one library state per process), and uploads are parsed in gunicorn's
# threads: every call into pypdfium2 -- open, page text, close -- holds this lock. It is taken per
# call, never across a page's OCR, so another thread's PDF waits at most one page's extraction.
_PDFIUM_LOCK = threading.Lock()


def parse(data: bytes, *, name: str = "", max_chars: int | None = None) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # Many PDFs are encrypted only against editing, with an empty user password.
            try:
                decrypted = reader.decrypt("")
            except (DependencyError, NotImplementedError) as exc:
                raise UnreadableContent(
                    f"The PDF is encrypted with a scheme that cannot be opened here ({exc})."
                ) from exc
            if not decrypted:
                raise UnreadableContent("The PDF is password-protected; upload an unprotected copy.")
        page_count = len(reader.pages)
    except ParseError:
        raise
    except (PdfReadError, FileNotDecryptedError) as exc:
        raise UnreadableContent(f"The PDF is corrupt or unreadable: {exc}") from exc
    except Exception as exc:
        # pypdf surfaces malformed files as assorted KeyError/ValueError/TypeError/...
        raise UnreadableContent(f"The PDF is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc

    parts: list[str] = []
    sections: list[Section] = []
    unreadable_pages: list[int] = []
    ocr_pages: list[int] = []  # pages whose text came from OCR (they have no text layer)
    ocr_skipped: list[int] = []  # scanned pages past PDF_OCR_MAX_PAGES
    ocr_deferred: list[int] = []  # scanned pages left for the task worker (inside ocr_deferred())
    ocr_failures = 0  # pages OCR could not read: they count against the cap too (each may take minutes)
    ocr_error: UnreadableContent | None = None
    repeated_pages: list[int] = []
    seen_pages: set[tuple[int, int]] = set()
    offset = 0
    with _pdfium_pages(data, page_count, name) as pdfium_text:
        for number in range(1, page_count + 1):
            try:
                page = reader.pages[number - 1]
                # A page tree may list one page object thousands of times (a 30 KB file became 27
                # million characters): its text is extracted once, its repeats are only counted.
                reference = page.indirect_reference
                key = (reference.idnum, reference.generation) if reference is not None else None
                if key is not None and key in seen_pages:
                    repeated_pages.append(number)
                    continue
                if key is not None:
                    seen_pages.add(key)
                raw = pdfium_text(number - 1)
                if not raw.strip():  # PDFium found no text (or failed): pypdf's, as before
                    raw = page.extract_text() or ""
            except Exception:
                # One broken page should not cost the whole document; it is listed in the metadata.
                logger.warning("Could not extract text from PDF page %s of %s", number, name or "upload", exc_info=True)
                unreadable_pages.append(number)
                continue
            page_text = normalize_text(raw).strip()
            if not page_text and _has_images(page):
                if len(ocr_pages) + ocr_failures + len(ocr_deferred) >= PDF_OCR_MAX_PAGES:
                    ocr_skipped.append(number)
                    continue
                try:
                    page_text = normalize_text(ocr_pdf_page_images(page)).strip()
                except NeedsOcr:
                    ocr_deferred.append(number)
                    continue
                except UnreadableContent as exc:
                    # A timeout or an undecodable scan costs that page only, like a broken page above.
                    logger.warning("OCR of PDF page %s of %s failed: %s", number, name or "upload", exc.message)
                    unreadable_pages.append(number)
                    ocr_failures += 1
                    ocr_error = ocr_error or exc
                    continue
                ocr_pages.append(number)
            if not page_text:
                continue
            if parts:
                offset += 2
            sections.append(
                Section(
                    heading_path=[], text=page_text, char_start=offset, char_end=offset + len(page_text), page=number
                )
            )
            parts.append(page_text)
            offset += len(page_text)
            if max_chars is not None and offset > max_chars:
                # Stop here rather than extract the rest only to refuse it.
                raise too_long(None if number < page_count else offset, max_chars)
    if ocr_deferred:
        raise NeedsOcr(len(ocr_deferred), APPLICATION_PDF)
    text = "\n\n".join(parts)

    if not text:
        if ocr_error is not None:
            raise UnreadableContent(f"The PDF has no text layer and OCR of its pages failed: {ocr_error.message}")
        if unreadable_pages and len(unreadable_pages) == page_count:
            raise UnreadableContent("No page of the PDF could be read; the file may be corrupt.")
        raise EmptyContent("The PDF has no extractable text: no text layer, and OCR found no text in its images.")

    metadata: dict = {"pages": page_count}
    if unreadable_pages:
        metadata["unreadable_pages"] = unreadable_pages
    if repeated_pages:
        metadata["repeated_pages"] = _page_ranges(repeated_pages)
    if ocr_pages:
        metadata["ocr_pages"] = _page_ranges(ocr_pages)
    if ocr_skipped:
        metadata["ocr_skipped_pages"] = _page_ranges(ocr_skipped)
    title = _pdf_title(reader) or name_title(name) or first_line_title(text)
    return ParsedDocument(
        title=cap_title(title), text=text, mime_type=APPLICATION_PDF, sections=sections, metadata=metadata
    )


@contextmanager
def _pdfium_pages(data: bytes, page_count: int, name: str) -> Iterator[Callable[[int], str]]:
    """A function from a page index to that page's text through PDFium ("" where PDFium fails,
    for pypdf to extract instead), the document closed on exit.

    Called after pypdf has opened the file, so encryption and corrupt files are refused as before
    (PDFium tries an empty user password too). If PDFium cannot open the file, or counts its
    pages differently (page indexes would not match pypdf's), every page returns "".
    """
    document = _pdfium_open(data, name)
    try:
        with _PDFIUM_LOCK:
            pdfium_count = len(document) if document is not None else page_count
        if pdfium_count != page_count:
            logger.warning(
                "PDFium counts %s pages in %s, pypdf %s; extracting its text with pypdf",
                pdfium_count, name or "upload", page_count,
            )  # fmt: skip
        if document is None or pdfium_count != page_count:
            yield lambda index: ""
        else:
            yield lambda index: _pdfium_page_text(document, index, name)
    finally:
        if document is not None:
            with _PDFIUM_LOCK:
                document.close()


def _pdfium_open(data: bytes, name: str):
    """The pypdfium2 document, or None (logged) if PDFium cannot open the file."""
    import pypdfium2

    try:
        with _PDFIUM_LOCK:
            return pypdfium2.PdfDocument(data)
    except Exception as exc:  # pypdfium2.PdfiumError, or a ctypes error on a strange file
        logger.warning("PDFium could not open %s (%s); extracting its text with pypdf", name or "upload", exc)
        return None


def _pdfium_page_text(document, index: int, name: str) -> str:
    """One page's text through PDFium, its page and text page closed again ("" if it fails).

    PDFium marks a hyphen that ends a line as "\\x02" and joins the two lines; it is put back as
    "-" and a line break, the text as the page shows it (and as pypdf extracted it): a compound
    broken at its hyphen ("colony-/stimulating") keeps it. Lines end with "\\r\\n", which
    normalize_text makes "\\n".
    """
    try:
        with _PDFIUM_LOCK:
            page = document[index]
            try:
                text_page = page.get_textpage()
                try:
                    text = text_page.get_text_bounded()
                finally:
                    text_page.close()
            finally:
                page.close()
    except Exception:
        logger.warning("PDFium could not read page %s of %s; trying pypdf", index + 1, name or "upload", exc_info=True)
        return ""
    return text.replace("\x02", "-\n")


def _has_images(page) -> bool:
    """Whether the page draws an image (a scan): only those are worth starting OCR for."""
    try:
        xobjects = (page.get("/Resources") or {}).get("/XObject") or {}
        return any(xobjects[key].get_object().get("/Subtype") == "/Image" for key in list(xobjects.keys())[:100])
    except Exception:
        return False


def _page_ranges(numbers: list[int]) -> list[str]:
    """[2, 3, 4, 9] -> ["2-4", "9"]: thousands of repeats stay a short metadata entry."""
    ranges: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        ranges.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ranges


def _pdf_title(reader) -> str:
    try:
        info = reader.metadata
        return clean_inline(str(info.title)) if info and info.title else ""
    except Exception:
        return ""
