"""PPTX through python-pptx: one section per slide (page = slide number), speaker notes kept.

MarkItDown's PPTX converter is python-pptx underneath; using python-pptx directly gives the
slide boundaries as sections instead of HTML comments in one Markdown string.
"""

from __future__ import annotations

import io

from documents.parsers._common import PPTX, DocumentBuilder, open_zip, pick_title
from documents.parsers.base import EmptyContent, ParsedDocument, UnreadableContent, clean_inline, name_title

_MAX_GROUP_DEPTH = 20


def parse(data: bytes, *, name: str) -> ParsedDocument:
    from pptx import Presentation

    open_zip(data, "PPTX").close()
    try:
        presentation = Presentation(io.BytesIO(data))
        core_title = presentation.core_properties.title or ""
        slides = list(presentation.slides)
    except Exception as exc:
        raise UnreadableContent(f"The PPTX file is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc

    builder = DocumentBuilder("PPTX presentation")
    first_slide_title = ""
    try:
        for number, slide in enumerate(slides, start=1):
            title_shape = slide.shapes.title
            slide_title = clean_inline(title_shape.text_frame.text) if title_shape is not None else ""
            first_slide_title = first_slide_title or slide_title
            builder.start_section([slide_title] if slide_title else [], page=number)
            if slide_title:
                builder.add(slide_title)
            skip = title_shape.shape_id if title_shape is not None else None
            for shape in _reading_order(slide.shapes):
                if shape.shape_id != skip:
                    _add_shape(builder, shape, 0)
            if slide.has_notes_slide:
                notes = slide.notes_slide.notes_text_frame
                if notes is not None and notes.text.strip():
                    builder.add("Notes: " + notes.text.strip())
    except UnreadableContent:
        raise
    except Exception as exc:
        raise UnreadableContent(f"The PPTX file is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc
    if builder.empty:
        raise EmptyContent("The PPTX presentation has no text.")
    title = pick_title(core_title, first_slide_title, name_title(name))
    return builder.build(title=title, mime_type=PPTX, metadata={"slides": len(slides)})


def _reading_order(shapes) -> list:
    # Shapes come in z-order (the order they were drawn); people read top to bottom, left to right.
    return sorted(shapes, key=lambda s: ((s.top or 0) // 100_000, s.left or 0))


def _add_shape(builder: DocumentBuilder, shape, depth: int) -> None:
    if depth > _MAX_GROUP_DEPTH:
        return
    if shape.shape_type is not None and shape.shape_type == 6:  # MSO_SHAPE_TYPE.GROUP
        for child in _reading_order(shape.shapes):
            _add_shape(builder, child, depth + 1)
        return
    if getattr(shape, "has_table", False) and shape.has_table:
        builder.add_table([[cell.text for cell in row.cells] for row in shape.table.rows])
        return
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        lines = []
        for paragraph in shape.text_frame.paragraphs:
            text = paragraph.text.strip()
            if text:
                lines.append(("  " * paragraph.level + "- " if paragraph.level else "") + text)
        builder.add("\n".join(lines))
