"""Office, e-book, RTF and image parsing: speed, peak memory and what structure survives, for
the format libraries used directly (documents/parsers/) against MarkItDown 0.1.9.

Documents are generated with the real writer libraries (documents/tests/format_fixtures.py) at
book scale: headings, paragraphs with one unique marker word each, a long table, slides with
speaker notes, several sheets. Every (format, parser) pair runs in a fresh process, so its peak
RSS (VmHWM) is its own; the time is the best of --rounds runs, parsing bytes already in memory.
Quality, measured on the output:
  markers    share of the unique marker words found in the text
  headings   share of the headings that come out as headings (a heading_path entry, or a
             Markdown '#' line for MarkItDown)
  located    share of markers whose slide/sheet/chapter can be told (Section.page/heading_path;
             for MarkItDown, the nearest '<!-- Slide number -->' / '## sheet' / '# chapter' above)
  header_repeats  times the long table's header row appears (1 = only at the top)
OCR: rendered A4 pages at 150 dpi, 30 lines each; seconds per page, and the share of the words
read right in order (difflib's matching blocks over the word sequences).

    .venv/bin/python bench/formats_bench.py            # writes bench/results/formats.{json,md}
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAGE_CHARS = 3000  # a printed page of prose, for "pages per second" of flowing-text formats
_WORDS = (
    "the orchard keeps records of every harvest and each tree carries a tag with its planting year while "
    "the ledger notes rainfall frost dates soil tests and the yield of apples pears plums and quinces"
).split()


def _prose(rng: random.Random, marker: str, words: int = 90) -> str:
    body = [rng.choice(_WORDS) for _ in range(words)]
    body.insert(rng.randrange(1, len(body)), marker)
    return " ".join(body).capitalize() + "."


def corpus(kind: str) -> tuple[bytes, dict]:
    """(file bytes, expectations) for one format, deterministic."""
    from documents.tests import format_fixtures as ff

    rng = random.Random(7)
    table = [["Tree", "Variety", "Planted", "Yield kg"]] + [
        [f"tree{i:04d}", rng.choice(["Bramley", "Conference", "Victoria"]), str(1980 + i % 40), str(i % 97)]
        for i in range(300)
    ]
    if kind in ("docx", "odt"):
        sections, headings, where = [], [], {}
        for s in range(40):
            heading = f"Section {s} {rng.choice(_WORDS).title()}"
            headings.append(heading)
            paragraphs = []
            for p in range(6):
                marker = f"mk{s:02d}x{p}"
                where[marker] = heading
                paragraphs.append(_prose(rng, marker))
            sections.append((1 if s % 4 == 0 else 2, heading, paragraphs))
        maker = ff.make_docx if kind == "docx" else ff.make_odt
        data = maker(title="Orchard Records", sections=sections, table=table)
        return data, {"markers": where, "headings": headings, "table_header": "Tree", "unit": "heading"}
    if kind == "pptx":
        slides, where = [], {}
        for n in range(1, 61):
            marker, note = f"mkslide{n:02d}", f"mknote{n:02d}"
            where[marker] = where[note] = n
            bullets = [" ".join(rng.choice(_WORDS) for _ in range(8)) for _ in range(4)] + [f"Point {marker}"]
            slides.append((f"Slide title {n}", bullets, f"Say {note} and " + _prose(rng, "", 30)))
        return ff.make_pptx(title="Orchard Review", slides=slides), {"markers": where, "headings": [], "unit": "slide"}
    if kind in ("xlsx", "csv"):
        sheets, where = {}, {}
        for name in ("Apples", "Pears", "Plums"):
            rows = [["Tree", "Variety", "Planted", "Yield kg", "Notes", "Marker"]]
            for i in range(3000):
                marker = f"mk{name.lower()}{i:04d}"
                where[marker] = name
                rows.append(
                    [
                        f"tree{i}",
                        rng.choice(["Bramley", "Conference"]),
                        1980 + i % 40,
                        i % 97,
                        rng.choice(_WORDS),
                        marker,
                    ]
                )
            sheets[name] = rows
        if kind == "xlsx":
            return ff.make_xlsx(title="Orchard Stock", sheets=sheets), {
                "markers": where,
                "headings": [],
                "table_header": "Tree",
                "unit": "sheet",
                "rows": 9000,
            }
        import csv

        out = io.StringIO()
        writer = csv.writer(out)
        rows = sheets["Apples"] + sheets["Pears"][1:] + sheets["Plums"][1:]
        writer.writerows(rows)
        return out.getvalue().encode(), {
            "markers": {m: None for m in where},
            "headings": [],
            "table_header": "Tree",
            "unit": None,
            "rows": 9000,
        }
    if kind == "epub":
        chapters, where, headings = [], {}, []
        for c in range(20):
            title = f"Chapter {c + 1}: The {rng.choice(_WORDS).title()}"
            headings.append(title)
            paragraphs = []
            for p in range(15):
                marker = f"mkch{c:02d}p{p:02d}"
                where[marker] = title
                paragraphs.append(_prose(rng, marker))
            chapters.append((title, paragraphs))
        return ff.make_epub(title="The Orchard Year", chapters=chapters), {
            "markers": where,
            "headings": headings,
            "unit": "chapter",
        }
    if kind == "rtf":
        where, paragraphs = {}, []
        for p in range(300):
            marker = f"mkrtf{p:03d}"
            where[marker] = None
            paragraphs.append(_prose(rng, marker) + " Crème brûlée.")
        return ff.make_rtf(title="Orchard Notes", paragraphs=paragraphs), {
            "markers": where,
            "headings": [],
            "unit": None,
        }
    raise ValueError(kind)


# --- one run, in its own process -------------------------------------------------------------------

DIRECT = {
    "docx": ("python-docx", "documents.parsers.word", "parse"),
    "pptx": ("python-pptx", "documents.parsers.powerpoint", "parse"),
    "xlsx": ("openpyxl (read-only)", "documents.parsers.spreadsheet", "parse"),
    "csv": ("csv (stdlib)", "documents.parsers.spreadsheet", "parse_csv"),
    "odt": ("odfpy", "documents.parsers.opendocument", "parse"),
    "epub": ("ebooklib + lxml", "documents.parsers.epub", "parse"),
    "rtf": ("striprtf", "documents.parsers.rtf", "parse"),
}
MARKITDOWN_FORMATS = ("docx", "pptx", "xlsx", "csv", "epub")


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_one(kind: str, parser: str, rounds: int, source: Path) -> dict:
    """Parse the file at `source` (written by the parent, so this process's peak RSS is the
    parser's and its imports', not the writer library's)."""
    import importlib

    data = source.read_bytes()
    expect = json.loads(source.with_suffix(".json").read_text())
    if parser == "direct":
        _, module, function = DIRECT[kind]
        parse = getattr(importlib.import_module(module), function)

        def convert():
            # The CSV parser reads decoded text (the registry decodes it, honouring the charset).
            return parse(data.decode("utf-8") if kind == "csv" else data, name=f"bench.{kind}")
    elif parser == "markitdown":
        from markitdown import MarkItDown, StreamInfo

        md = MarkItDown(enable_plugins=False)

        def convert():
            return md.convert_stream(io.BytesIO(data), stream_info=StreamInfo(extension=f".{kind}")).markdown
    elif parser == "mammoth":
        # MarkItDown's DOCX pipeline without its OMML pre-processing step: mammoth -> HTML ->
        # MarkItDown's markdownify.
        import mammoth
        from markitdown.converters import HtmlConverter

        html = HtmlConverter()

        def convert():
            return html.convert_string(mammoth.convert_to_html(io.BytesIO(data)).value).markdown
    else:
        raise ValueError(parser)
    baseline = _vm_hwm_mb()
    times, output, error = [], None, None
    for _ in range(rounds):
        start = time.perf_counter()
        try:
            output = convert()
        except Exception as exc:
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            break
        times.append(time.perf_counter() - start)
    result = {
        "format": kind,
        "parser": parser,
        "bytes": len(data),
        "peak_rss_mb": round(_vm_hwm_mb(), 1),
        "rss_before_mb": round(baseline, 1),
    }
    if error:
        return {**result, "error": error}
    best = min(times)
    text = output if isinstance(output, str) else output.text
    result.update({"seconds": round(best, 4), "mb_per_s": round(len(data) / 1e6 / best, 2), "chars": len(text)})
    if expect.get("rows"):
        result["rows_per_s"] = round(expect["rows"] / best)
    elif expect["unit"] == "slide":
        result["slides_per_s"] = round(60 / best, 1)
    else:
        result["pages_per_s"] = round(len(text) / PAGE_CHARS / best, 1)
    result.update(_quality(output, expect))
    return result


def _quality(output, expect: dict) -> dict:
    markers = expect["markers"]
    text = output if isinstance(output, str) else output.text
    present = set(re.findall(r"\bmk\w+", text))
    quality = {"markers": round(sum(m in present for m in markers) / len(markers), 3)}
    headings = expect["headings"]
    if isinstance(output, str):
        heading_lines = {line.lstrip("#").strip() for line in output.splitlines() if line.startswith("#")}
        if headings:
            quality["headings"] = round(sum(h in heading_lines for h in headings) / len(headings), 3)
        located = _markdown_located(output, markers, expect["unit"])
    else:
        if headings:
            paths = {h for s in output.sections for h in s.heading_path}
            quality["headings"] = round(sum(h in paths for h in headings) / len(headings), 3)
        place_of = {}
        for section in output.sections:
            if expect["unit"] == "slide":
                value = section.page
            elif expect["unit"] == "heading":
                value = section.heading_path[-1] if section.heading_path else None
            else:
                value = section.heading_path[0] if section.heading_path else None
            for marker in re.findall(r"\bmk\w+", section.text):
                place_of.setdefault(marker, value)
        located = sum(1 for marker, place in markers.items() if place is not None and place_of.get(marker) == place)
    if expect["unit"]:
        quality["located"] = round(located / len(markers), 3)
    if expect.get("table_header"):
        quality["header_repeats"] = len(re.findall(r"^\| *Tree *\|", text, re.MULTILINE))
    return quality


def _markdown_located(markdown: str, markers: dict, unit: str | None) -> int:
    if not unit:
        return 0
    located, current = 0, None
    position = {}
    for line in markdown.splitlines():
        slide = re.match(r"<!-- Slide number: (\d+) -->", line)
        if slide:
            current = int(slide.group(1))
        elif line.startswith("#") and unit != "slide":
            level = len(line) - len(line.lstrip("#"))
            title = line.lstrip("#").strip()
            if unit == "heading" or (unit == "sheet" and level == 2) or (unit == "chapter" and level == 1):
                current = title
        for marker in re.findall(r"\bmk\w+", line):
            position.setdefault(marker, current)
    for marker, place in markers.items():
        located += place is not None and position.get(marker) == place
    return located


# --- OCR --------------------------------------------------------------------------------------------


def run_ocr(pages: int) -> dict:
    from PIL import Image, ImageDraw, ImageFont

    from documents.parsers import ocr

    rng = random.Random(11)
    font = ImageFont.load_default(size=22)
    images, truths = [], []
    for _ in range(pages):
        image = Image.new("RGB", (1240, 1754), "white")  # A4 at 150 dpi
        draw = ImageDraw.Draw(image)
        lines = [" ".join(rng.choice(_WORDS) for _ in range(10)) for _ in range(30)]
        for i, line in enumerate(lines):
            draw.text((100, 120 + 48 * i), line, fill="black", font=font)
        images.append(image)
        truths.append(lines)
    start = time.perf_counter()
    ocr.ocr_image(Image.new("RGB", (200, 100), "white"))  # starts the worker and loads the models
    load = time.perf_counter() - start
    times, correct, total = [], 0, 0
    for image, lines in zip(images, truths, strict=True):
        start = time.perf_counter()
        text = ocr.ocr_image(image)
        times.append(time.perf_counter() - start)
        expected = " ".join(lines).split()
        # Words read right, in order: a missed or split word costs itself, not the rest of the page.
        matcher = difflib.SequenceMatcher(a=expected, b=text.split(), autojunk=False)
        total += len(expected)
        correct += sum(block.size for block in matcher.get_matching_blocks())
    worker_hwm = 0.0
    process = ocr._pool._process
    if process is not None:
        with open(f"/proc/{process.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    worker_hwm = int(line.split()[1]) / 1024
    return {
        "pages": pages,
        "page_pixels": "1240x1754 (A4, 150 dpi), 30 lines of 22 px text",
        "model_load_seconds": round(load, 2),
        "seconds_per_page": [round(t, 2) for t in times],
        "best_seconds_per_page": round(min(times), 2),
        "word_accuracy": round(correct / total, 3),
        "worker_peak_rss_mb": round(worker_hwm, 1),
    }


# --- main -----------------------------------------------------------------------------------------


def _subprocess(args: list[str]) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False, cwd=ROOT, timeout=1800
    )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1][:300] if completed.stderr.strip() else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ocr-pages", type=int, default=3)
    parser.add_argument("--one", nargs=3, metavar=("FORMAT", "PARSER", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--ocr-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.rounds, Path(args.one[2]))))
        return
    if args.ocr_only:
        print(json.dumps(run_ocr(args.ocr_pages)))
        return

    import tempfile

    from harness import cpu_model, versions, write_results

    runs = []
    workdir = Path(tempfile.mkdtemp(prefix="formats-bench-"))
    for kind in DIRECT:
        data, expect = corpus(kind)
        source = workdir / f"bench.{kind}"
        source.write_bytes(data)
        source.with_suffix(".json").write_text(json.dumps(expect))
        for which in (
            ["direct"]
            + (["markitdown"] if kind in MARKITDOWN_FORMATS else [])
            + (["mammoth"] if kind == "docx" else [])
        ):
            result = _subprocess(["--one", kind, which, str(source), "--rounds", str(args.rounds)])
            result.setdefault("format", kind)
            result.setdefault("parser", which)
            if which == "direct":
                result["library"] = DIRECT[kind][0]
            print(json.dumps(result), file=sys.stderr)
            runs.append(result)
    ocr_result = _subprocess(["--ocr-only", "--ocr-pages", str(args.ocr_pages)])
    print(json.dumps(ocr_result), file=sys.stderr)

    report = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "versions": versions(
            "python-docx",
            "python-pptx",
            "openpyxl",
            "odfpy",
            "ebooklib",
            "striprtf",
            "rapidocr",
            "onnxruntime",
            "markitdown",
            "mammoth",
            "pandas",
        ),
        "rounds": args.rounds,
        "runs": runs,
        "ocr": ocr_result,
    }
    write_results("formats", report, _markdown(report))


def _markdown(report: dict) -> str:
    lines = [
        "# Office, e-book, RTF and image parsing",
        "",
        f"{report['machine']['cpu']}, shared with other work (load average at start "
        f"{report['machine']['load_average_at_start'][0]:.1f}); best of {report['rounds']} runs; each run in its own "
        "process (peak RSS = VmHWM of that process, imports included). `bench/formats_bench.py`.",
        "",
        "| format | parser | input | seconds | MB/s | rate | peak RSS MB | markers | headings | located | table header rows |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        name = run.get("library", "MarkItDown" if run["parser"] == "markitdown" else "mammoth + markdownify")
        if "error" in run:
            lines.append(
                f"| {run['format']} | {name} | {run.get('bytes', 0) / 1e6:.2f} MB | fails: {run['error']} | | | | | | | |"
            )
            continue
        rate = (
            f"{run['rows_per_s']:,} rows/s" if "rows_per_s" in run
            else f"{run['slides_per_s']} slides/s" if "slides_per_s" in run
            else f"{run['pages_per_s']} pages/s"
        )  # fmt: skip
        lines.append(
            f"| {run['format']} | {name} | {run['bytes'] / 1e6:.2f} MB | {run['seconds']} | {run['mb_per_s']} | {rate} | "
            f"{run['peak_rss_mb']} | {run['markers']} | {run.get('headings', '')} | {run.get('located', '')} | "
            f"{run.get('header_repeats', '')} |"
        )
    ocr = report["ocr"]
    lines += [
        "",
        "Pages = extracted characters / 3,000. markers = share of unique words found; headings = share of headings "
        "that come out as headings; located = share of marker words whose slide / sheet / chapter / heading can be "
        "told from the output; table header rows = how often the long table's header appears (1 = only at the top).",
        "",
        "## OCR (rapidocr, PP-OCRv6 ONNX models from the wheel, CPU)",
        "",
    ]
    if "error" in ocr:
        lines.append(f"failed: {ocr['error']}")
    else:
        lines += [
            f"{ocr['pages']} pages of {ocr['page_pixels']}: model load {ocr['model_load_seconds']} s once per worker; "
            f"{ocr['best_seconds_per_page']} s per page at best (all: {ocr['seconds_per_page']}); "
            f"word accuracy {ocr['word_accuracy']}; OCR worker peak RSS {ocr['worker_peak_rss_mb']} MB.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
