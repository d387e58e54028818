"""XLSX through openpyxl (read-only, streaming) and CSV through the csv module: one section per
sheet, each sheet a Markdown table whose header row is repeated every few rows.

openpyxl directly rather than MarkItDown: MarkItDown loads every sheet into a pandas DataFrame
and renders HTML before converting it to Markdown, which is several times slower and holds the
whole workbook in memory; read-only openpyxl streams rows (bench/results/formats.md).
"""

from __future__ import annotations

import csv
import datetime
import io

from documents.parsers._common import MAX_TEXT_CHARS, XLSX, DocumentBuilder, open_zip, pick_title, too_much_text
from documents.parsers.base import EmptyContent, ParsedDocument, UnreadableContent, name_title

TEXT_CSV = "text/csv"
# Grid cells visited across a workbook, empty ones included: a few-kB sheet can declare a cell in
# column XFD of every row, and each such row is a 16,384-cell tuple to walk.
MAX_CELLS = 10_000_000


def parse(data: bytes, *, name: str) -> ParsedDocument:
    """Parse an XLSX workbook."""
    from openpyxl import load_workbook

    open_zip(data, "XLSX").close()
    try:
        # data_only: the value Excel last computed, not the formula text.
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise UnreadableContent(f"The XLSX file is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc
    builder = DocumentBuilder("XLSX workbook")
    try:
        core_title = workbook.properties.title or "" if workbook.properties else ""
        sheet_names = []
        budget = [MAX_CELLS]
        for sheet in workbook.worksheets:
            sheet_names.append(sheet.title)
            builder.start_section([sheet.title])
            builder.add(sheet.title)
            # The stored dimension (e.g. A1:XFD1048576) would have every row padded to it; without
            # it rows come as stored and missing rows as empty tuples.
            sheet.reset_dimensions()
            builder.add_table(_bounded_rows(sheet.iter_rows(values_only=True), budget))
    except UnreadableContent:
        raise
    except Exception as exc:
        raise UnreadableContent(f"The XLSX file is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc
    finally:
        workbook.close()
    if builder.empty:
        raise EmptyContent("The XLSX workbook has no cells with values.")
    title = pick_title(core_title, name_title(name))
    return builder.build(title=title, mime_type=XLSX, metadata={"sheets": sheet_names})


def parse_csv(text: str, *, name: str = "", url: str = "") -> ParsedDocument:
    """Parse a CSV (or TSV, semicolon-separated...) file, already decoded, as one sheet."""
    sample = text[:65536]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    builder = DocumentBuilder("CSV file")
    try:
        rows = _bounded_rows(csv.reader(io.StringIO(text, newline=""), dialect), [MAX_CELLS])
    except csv.Error as exc:
        raise UnreadableContent(f"The CSV file could not be read: {exc}") from exc
    builder.add_table(rows)
    if builder.empty:
        raise EmptyContent("The CSV file has no values.")
    return builder.build(title=pick_title(name_title(name), "CSV"), mime_type=TEXT_CSV)


def _bounded_rows(rows, budget: list[int]) -> list[list[str]]:
    """Rows as text without empty rows and without the columns that are empty in every row,
    refusing as soon as the cells walked pass MAX_CELLS or their text passes the document limit
    (rows stream in: nothing beyond the limit is read). Only non-empty cells are held, so a
    sparse sheet (one value in column XFD) costs its values, not its width."""
    sparse: list[dict[int, str]] = []
    used: set[int] = set()
    size = 0
    for row in rows:
        budget[0] -= max(len(row), 1)
        if budget[0] < 0:
            raise UnreadableContent(
                f"The spreadsheet spans more than {MAX_CELLS:,} cells, the most one document may have; "
                "split it into smaller files."
            )
        cells = {}
        for index, value in enumerate(row):
            if value is not None and value != "":
                text = _cell_text(value)
                cells[index] = text
                size += len(text) + 3
        if not cells:
            continue
        if size > MAX_TEXT_CHARS:
            raise too_much_text("spreadsheet")
        used.update(cells)
        sparse.append(cells)
    columns = sorted(used)
    return [[cells.get(column, "") for column in columns] for cells in sparse]


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ", timespec="seconds").removesuffix(" 00:00:00")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)
