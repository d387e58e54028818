"""OCR of images and of scanned PDF pages with RapidOCR (PP-OCRv6 ONNX models that ship inside
the `rapidocr` wheel; runs offline on CPU through onnxruntime, nothing is downloaded).

The model runs in one long-lived child process (documents/parsers/_ocr_worker.py), started on
first use and reused: a page that runs past its time limit is stopped by killing that process
(onnxruntime cannot be interrupted from another thread), the caller gets a clear error, and the
next page starts a fresh worker. Calls are serialised: one page at a time per process, which on a
2-core machine is also the fastest.

OCR is slow (seconds a page), so an upload over HTTP does not wait for it: inside
``ocr_deferred()`` the parsers stop where OCR would start and raise ``NeedsOcr`` with the number of
pages to read (after the cheap checks: type, pixel size, pages), and the upload is read later by
the task worker (documents.tasks), which follows the pages through ``ocr_pages_watched``. Context
variables, not arguments: they reach the PDF and image parsers through the one registry without
changing every parser's signature.
"""

from __future__ import annotations

import atexit
import contextvars
import itertools
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from documents.parsers.base import UnreadableContent

# A full A4 page at 300 dpi takes a few seconds; the limit leaves room for a busy machine.
OCR_SECONDS_PER_PAGE = 120.0
# Loading the three models; only paid once per worker process.
OCR_START_SECONDS = 120.0
# Pixels decoded for one image: an A4 page scanned at 600 dpi is 35 MP. Larger claims (a 20 MB
# PNG can declare 2 GB of pixels) are refused from the header, before any decoding.
MAX_IMAGE_PIXELS = 40_000_000
# Images the OCR sees are scaled down to this long side: RapidOCR detects text on at most 2000 px
# anyway, and the frame sent to the worker stays under ~50 MB.
OCR_MAX_SIDE = 4000
# Embedded PDF images smaller than this on both sides are icons and rules, not scanned text.
_MIN_PDF_IMAGE_SIDE = 64

_WORKER = Path(__file__).with_name("_ocr_worker.py")


class OcrError(UnreadableContent):
    pass


class OcrTimeout(OcrError):
    pass


class NeedsOcr(Exception):
    """Raised inside ``ocr_deferred()`` where OCR would start: the file needs ``pages`` pages read.

    Not a ParseError: the file is fine so far, only too slow to read now. ``mime`` is its type.
    """

    def __init__(self, pages: int, mime: str = ""):
        super().__init__(f"{pages} page(s) need OCR")
        self.pages = pages
        self.mime = mime


_deferred: contextvars.ContextVar[bool] = contextvars.ContextVar("ocr_deferred", default=False)
_page_watcher: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "ocr_page_watcher", default=None
)


@contextmanager
def ocr_deferred() -> Iterator[None]:
    """Parse without OCR: a parser about to read a page by OCR raises ``NeedsOcr`` instead."""
    token = _deferred.set(True)
    try:
        yield
    finally:
        _deferred.reset(token)


def ocr_is_deferred() -> bool:
    return _deferred.get()


@contextmanager
def ocr_pages_watched(on_page: Callable[[int], None]) -> Iterator[None]:
    """Call ``on_page(n)`` before the n-th page is read by OCR (n from 1), in this context.

    ``on_page`` may raise (the task worker is stopping, say): the parse stops before that page.
    """
    pages = itertools.count(1)
    token = _page_watcher.set(lambda: on_page(next(pages)))
    try:
        yield
    finally:
        _page_watcher.reset(token)


def ocr_page_starting() -> None:
    """A parser is about to read one page by OCR: ``NeedsOcr(1)`` when deferred, else tell the watcher."""
    if _deferred.get():
        raise NeedsOcr(1)
    watcher = _page_watcher.get()
    if watcher is not None:
        watcher()


class _Expired(Exception):
    """The worker did not answer in time (turned into OcrTimeout/OcrError with a message)."""


def check_pixels(width: int, height: int, what: str = "The image") -> None:
    if width <= 0 or height <= 0:
        raise UnreadableContent(f"{what} has no pixels ({width}x{height}).")
    if width * height > MAX_IMAGE_PIXELS:
        raise UnreadableContent(
            f"{what} is {width:,}x{height:,} pixels ({width * height / 1e6:,.0f} megapixels); the limit is "
            f"{MAX_IMAGE_PIXELS / 1e6:,.0f} megapixels."
        )


def ocr_image(image, *, timeout: float = OCR_SECONDS_PER_PAGE) -> str:
    """Text read from a PIL image, lines in reading order; "" when it shows no text.

    Raises OcrTimeout when the page takes longer than `timeout` seconds and OcrError when the
    model cannot run; both are UnreadableContent with a message fit for the user.
    """
    import numpy as np

    check_pixels(*image.size)
    image = image.convert("RGB")
    if max(image.size) > OCR_MAX_SIDE:
        image.thumbnail((OCR_MAX_SIDE, OCR_MAX_SIDE))
    pixels = np.asarray(image, dtype=np.uint8)
    lines = _pool.run(pixels, timeout=timeout)
    return _reading_order(lines)


def ocr_pdf_page_images(page, *, timeout: float = OCR_SECONDS_PER_PAGE) -> str:
    """OCR the images drawn on a pypdf page (a scanned page is one page-sized image) and return
    their text, for pages whose text layer is empty.

    Embedded images, not a rendering of the page: pypdf can extract them but cannot rasterise a
    page, and a scan's image is the page at its scanned resolution. Each image's pixel size is
    read from its dictionary and checked before pypdf decodes it. `timeout` bounds the page.
    """
    deadline = time.monotonic() + timeout
    try:
        resources = page.get("/Resources") or {}
        xobjects = resources.get("/XObject") or {}
        candidates = []
        for key in list(xobjects.keys())[:100]:
            obj = xobjects[key].get_object()
            if obj.get("/Subtype") != "/Image":
                continue
            width, height = int(obj.get("/Width", 0)), int(obj.get("/Height", 0))
            if width < _MIN_PDF_IMAGE_SIDE or height < _MIN_PDF_IMAGE_SIDE:
                continue
            check_pixels(width, height, "An image on the PDF page")
            candidates.append(key)
    except UnreadableContent:
        raise
    except Exception as exc:
        raise UnreadableContent(f"The PDF page's images could not be read ({type(exc).__name__}: {exc}).") from exc
    if candidates:
        ocr_page_starting()
    texts = []
    for key in candidates:
        try:
            image = page.images[key].image
        except Exception as exc:
            raise UnreadableContent(
                f"An image on the PDF page could not be decoded ({type(exc).__name__}: {exc})."
            ) from exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OcrTimeout(f"OCR of the page did not finish within {timeout:g} seconds.")
        text = ocr_image(image, timeout=remaining)
        if text:
            texts.append(text)
    return "\n\n".join(texts)


def _reading_order(lines: list) -> str:
    """Join detected boxes into lines: boxes whose vertical centres are within half a line height
    are one line, read left to right; lines top to bottom."""
    boxes = sorted(lines, key=lambda item: ((item[2][1] + item[2][3]) / 2, item[2][0]))
    rows: list[list] = []
    for item in boxes:
        _, y0, _, y1 = item[2]
        centre, height = (y0 + y1) / 2, max(y1 - y0, 1.0)
        if rows:
            last = rows[-1][-1][2]
            if abs(centre - (last[1] + last[3]) / 2) < height / 2:
                rows[-1].append(item)
                continue
        rows.append([item])
    return "\n".join(" ".join(i[0] for i in sorted(row, key=lambda i: i[2][0])).strip() for row in rows).strip()


class _WorkerPool:
    """One worker process, started lazily and replaced after a timeout or crash."""

    def __init__(self):
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None

    def run(self, pixels, *, timeout: float) -> list:
        with self._lock:
            process = self._ensure_started()
            height, width = pixels.shape[:2]
            header = json.dumps({"height": height, "width": width}).encode()
            body = pixels.tobytes()
            try:
                process.stdin.write(struct.pack(">I", len(header)) + header)
                process.stdin.write(struct.pack(">I", len(body)))
                process.stdin.write(body)
                process.stdin.flush()
                reply = self._read_reply(process, timeout)
            except _Expired:
                self._stop()
                raise OcrTimeout(f"OCR of the page did not finish within {timeout:g} seconds.") from None
            except (OSError, ValueError) as exc:
                self._stop()
                raise OcrError(f"The OCR worker stopped unexpectedly ({exc}).") from exc
            if "error" in reply:
                raise OcrError(f"OCR failed: {reply['error']}")
            return reply["lines"]

    def _ensure_started(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._process = subprocess.Popen(
            [sys.executable, str(_WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            reply = self._read_reply(self._process, OCR_START_SECONDS)
        except _Expired:
            self._stop()
            raise OcrError(f"The OCR model did not load within {OCR_START_SECONDS:.0f} seconds.") from None
        except (OSError, ValueError) as exc:
            self._stop()
            raise OcrError(f"The OCR worker could not start ({exc}).") from exc
        if not reply.get("ready"):
            self._stop()
            raise OcrError(f"OCR is unavailable: {reply.get('error', 'the worker did not start')}.")
        return self._process

    @staticmethod
    def _read_reply(process: subprocess.Popen, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = process.stdout.fileno()

        def read_exact(size: int) -> bytes:
            chunks, remaining = [], size
            while remaining:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise _Expired
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    raise OSError(f"worker exited with code {process.poll()}")
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks)

        (size,) = struct.unpack(">I", read_exact(4))
        return json.loads(read_exact(size))

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._stop()


_pool = _WorkerPool()
atexit.register(_pool.close)
