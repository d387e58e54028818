"""PNG, JPEG and TIFF images through OCR (documents.parsers.ocr): one section per image frame,
with the frame number as the page of multi-page TIFF scans.

Pillow reads only the header when opening, so the pixel size is checked before any decoding;
Pillow's own decompression-bomb guard stays on as a second line. Inside ``ocr_deferred()`` (an
upload over HTTP) only those header checks run, for every frame, and the parse ends with
``NeedsOcr``: nothing is decoded until the task worker reads the file.
"""

from __future__ import annotations

import io
import warnings

from documents.parsers._common import DocumentBuilder, pick_title
from documents.parsers.base import EmptyContent, ParsedDocument, UnreadableContent, name_title
from documents.parsers.ocr import (
    OCR_SECONDS_PER_PAGE,
    NeedsOcr,
    check_pixels,
    ocr_image,
    ocr_is_deferred,
    ocr_page_starting,
)

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "TIFF": "image/tiff"}
# Pages of one multi-page TIFF read by OCR: at OCR_SECONDS_PER_PAGE each this bounds the file's time.
MAX_IMAGE_FRAMES = 50


def parse(data: bytes, *, name: str, timeout: float = OCR_SECONDS_PER_PAGE) -> ParsedDocument:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # DecompressionBombWarning (89-179 MP) becomes an error; check_pixels below is stricter.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableContent(f"The image is too large to decode ({exc}).") from exc
    except UnidentifiedImageError as exc:
        raise UnreadableContent(f"The image could not be read ({exc}).") from exc
    except Exception as exc:
        raise UnreadableContent(f"The image is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc
    kind = IMAGE_TYPES.get(image.format or "")
    if kind is None:
        raise UnreadableContent(f"Images in {image.format} format are not supported; use PNG, JPEG or TIFF.")
    check_pixels(*image.size)
    try:
        # Counting a TIFF's pages walks its page directories; a damaged one raises anything.
        frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    except Exception as exc:
        raise UnreadableContent(f"The image is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc
    if frames > MAX_IMAGE_FRAMES:
        raise UnreadableContent(f"The TIFF has {frames} pages; the limit is {MAX_IMAGE_FRAMES} pages per file.")
    if ocr_is_deferred():
        _check_frame_headers(image, frames)
        raise NeedsOcr(frames, kind)

    builder = DocumentBuilder("image")
    for index in range(frames):
        try:
            image.seek(index)
            check_pixels(*image.size, what=f"Page {index + 1} of the image")
            image.load()
        except UnreadableContent:
            raise
        except Exception as exc:
            raise UnreadableContent(f"The image is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc
        ocr_page_starting()
        # Phone photos of pages are stored sideways with an EXIF rotation; OCR needs them upright.
        text = ocr_image(ImageOps.exif_transpose(image), timeout=timeout)
        builder.start_section([], page=index + 1 if frames > 1 else None)
        builder.add(text)
    if builder.empty:
        raise EmptyContent("No text was found in the image.")
    return builder.build(
        title=pick_title(name_title(name), "Image"), mime_type=kind, metadata={"ocr": True, "pages": frames}
    )


def _check_frame_headers(image, frames: int) -> None:
    """Each frame's pixel size, from its header only (seeking a TIFF frame reads its directory)."""
    for index in range(1, frames):
        try:
            image.seek(index)
        except Exception as exc:
            raise UnreadableContent(f"The image is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc
        check_pixels(*image.size, what=f"Page {index + 1} of the image")
