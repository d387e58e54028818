"""Ingestion throughput: the whole pipeline beside the raw embedder on the same chunks (SciFact).

Run from the project root; it creates (and drops first) its own database and data folder:

    .venv/bin/python bench/ingest_bench.py                                  # onnx-int8, whole corpus
    .venv/bin/python bench/ingest_bench.py --runtimes onnx-int8,torch       # both runtimes
    .venv/bin/python bench/ingest_bench.py --docs 1000 --runtimes torch     # a quicker subset

Pipeline ``sequential`` = what `manage.py ingest` does with the local model: ``document_ingest_many``
over every SciFact document (title, abstract as text/plain, url, metadata; parse, chunk, diff) in
the command's batches (INGEST_BATCH_DOCUMENTS documents, one transaction each) inside ``changes_batched``, then ``vectors_sync_pending`` (embedding cache
lookups, embedding, cache writes, upserts into a fresh embedded qdrant-edge store, status
updates). Pipeline ``alongside`` = what it does with a remote embedder, measured here with the
local one to decide between them: the same ``document_ingest_many`` loop, with a
``vectors.alongside.SyncAlongside`` told about each
document's new chunks: every full batch of ``SYNC_BATCH`` pending chunks goes to the embedding
thread while the next documents are stored, and the sync's database work (cache lookups and
writes, status updates) and the upserts into a fresh embedded qdrant-edge store run in the
storing thread between batches; ``finish()`` embeds the rest. Fresh PostgreSQL database.
Raw = ``embedder.embed_documents`` alone (the same process-wide embedder object, so the same
runtime, threads and batch size) on exactly the inputs the pipeline embedded (context line +
chunk text, read back from the chunk rows), in document order, in calls of ``SYNC_BATCH`` texts
like the sync's. The pipelines alternate slice by slice (--variants).

The corpus is processed in --slices slices; each slice runs the pipeline and the raw embedder on
that slice's chunks back to back, raw first on even slices (its inputs are planned with the
pipeline's own parse/chunk functions and checked against the stored chunks afterwards), so both
see the same load from other processes on the shared cores and a drifting load favours neither:
the ratio pipeline/raw is the robust figure; absolute chunks/s are not (the load average is
recorded). Besides wall time the script reports CPU time: this process (all
threads) plus, for the pipeline, its PostgreSQL backend (read from /proc, the server runs here).

Each runtime runs in its own child process (fresh database, data folder, vector store and
model), so peak RSS (VmHWM) is that runtime's alone. Writes bench/results/ingest.json (merged per
runtime) and bench/results/ingest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import cpu_model, proc_status, versions  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "scifact-train"
RESULTS = ROOT / "bench" / "results"
DEFAULT_DB_URL = "postgres://postgres@127.0.0.1:5432/postgres"
URL_PREFIX = "beir://scifact-train/"


# --- helpers shared by parent and child ---------------------------------------------------------


def database_url(base: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/" + name))


def recreate_database(base_url: str, name: str, *, template: str | None = None) -> None:
    import psycopg

    with psycopg.connect(database_url(base_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))


def find_onnx_export(explicit: str | None) -> Path | None:
    """An existing ONNX export to copy into the fresh data folder (exporting is an install step)."""
    from vectors.embedders.onnx import export_is_current

    candidates = [Path(explicit)] if explicit else []
    candidates += [
        ROOT / "var" / "models" / "all-MiniLM-L6-v2" / "onnx",
        Path("/tmp/perf/onnx"),
    ]
    for path in candidates:
        if path.is_dir() and export_is_current(path):
            return path
    return None


class RssSampler:
    """Samples VmRSS every `interval` seconds; `phase` labels the samples."""

    def __init__(self, interval: float = 0.25, on_tick=None) -> None:
        self.interval = interval
        self.on_tick = on_tick
        self.phase = "setup"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_status()["VmRSS"]
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)
            if self.on_tick:
                self.on_tick()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class PostgresCpu:
    """CPU seconds used by every PostgreSQL backend connected to one database (this machine's server).

    Backends are found by their process title ("postgres: ... <user> <database> ..."), so the
    connections of background threads count too; a backend that exits keeps its last reading.
    """

    def __init__(self, database: str) -> None:
        self.marker = f" {database} "
        self.seen: dict[int, float] = {}
        self.lock = threading.Lock()

    def sample(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                title = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if not title.startswith("postgres:") or self.marker not in title + " ":
                    continue
                cpu = int(Path(entry.path, "schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                continue
            with self.lock:
                self.seen[int(entry.name)] = cpu

    def total(self, *, rescan: bool = True) -> float:
        """CPU seconds so far; ``rescan=False`` re-reads only the backends already found (cheaper)."""
        if rescan:
            self.sample()
        else:
            with self.lock:
                pids = list(self.seen)
            for pid in pids:
                try:
                    cpu = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
                except (OSError, ValueError, IndexError):
                    continue  # exited: keep its last reading
                with self.lock:
                    self.seen[pid] = cpu
        with self.lock:
            return sum(self.seen.values())


# --- pieces the format bench (formats_ingest_bench.py) shares -----------------------------------


def bench_environment(
    *, database_url: str, data_dir: Path, runtime: str, batch_size: int, onnx_dir: str | None
) -> None:
    """Settings of a child that ingests with the local model, set before Django starts; copies
    an existing ONNX export into the fresh data folder (exporting is an install step)."""
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "ragsite.settings",
            "DATABASE_URL": database_url,
            "DATA_DIR": str(data_dir),
            "EMBEDDING_BACKEND": "local",
            "EMBEDDING_RUNTIME": runtime,
            "EMBEDDING_BATCH_SIZE": str(batch_size),
            # As deployed: tasks go to the database queue (the keyword-statistics refresh each
            # commit requests is queued once, for the worker); the vector sync runs in the
            # foreground like `manage.py ingest` does.
            "TASKS_BACKEND": "database",
            "EMBEDDED_WORKER": "false",
            "LOG_LEVEL": "WARNING",
        }
    )
    if runtime != "torch":
        source = find_onnx_export(onnx_dir)
        if source is not None:
            shutil.copytree(source, data_dir / "models" / "all-MiniLM-L6-v2" / "onnx")
        # else: the embedder exports on first use, before any timing starts (an install-time step).


def child_start(args: argparse.Namespace, db_name: str, *, prefix: str, template: str | None = None) -> Path:
    """A bench child's fresh database (a clone of ``template`` if given) and data folder, its
    settings (``bench_environment``, from args.database_url, runtime, batch_size, onnx_dir), then
    Django; returns the data folder."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    recreate_database(args.database_url, db_name, template=template)
    bench_environment(
        database_url=database_url(args.database_url, db_name),
        data_dir=data_dir,
        runtime=args.runtime,
        batch_size=args.batch_size,
        onnx_dir=args.onnx_dir,
    )
    import django

    django.setup()
    return data_dir


class TimedCalls:
    """While started, ``owner.name`` is wrapped: seconds spent inside it, and the size and first
    argument of each call (``record``), e.g. the embedder's batches inside the pipeline."""

    def __init__(self, owner, name: str, *, record: bool = False) -> None:
        self.owner, self.name, self.record = owner, name, record
        self.seconds = 0.0
        self.calls: list = []
        self._own = name in vars(owner)
        self._original = getattr(owner, name)

    def start(self) -> TimedCalls:
        original = self._original

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                if self.record:
                    self.calls.append(list(args[0]) if args else None)

        setattr(self.owner, self.name, timed)
        return self

    def stop(self) -> None:
        if self._own:
            setattr(self.owner, self.name, self._original)
        else:
            delattr(self.owner, self.name)


def raw_embed(embedder, inputs: list[str], *, call_size: int, sampler: RssSampler | None = None) -> tuple[float, float]:
    """The raw embedder on ``inputs`` in calls of ``call_size`` (the sync's): (wall s, CPU s)."""
    if sampler is not None:
        sampler.phase = "raw"
    cpu_start, started = time.process_time(), time.perf_counter()
    for start in range(0, len(inputs), call_size):
        embedder.embed_documents(inputs[start : start + call_size])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_start
    if sampler is not None:
        sampler.phase = "between"
    return seconds, cpu


def planned(items: list[dict]) -> list[tuple]:
    """Each ``document_ingest`` item prepared by the service itself (parse, chunk; nothing stored)
    with what the pipeline will embed for it: context line + chunk text, per chunk. The benches
    check these inputs against the stored chunks afterwards."""
    from documents.services import _document_prepare, chunk_context, embedding_input

    out = []
    for item in items:
        prepared = _document_prepare(**{**item, "keep_file": False})
        out.append(
            (prepared, [embedding_input(d, chunk_context(prepared.title, d.heading_path)) for d in prepared.drafts])
        )
    return out


def planned_inputs(items: list[dict]) -> list[str]:
    """The inputs ``planned`` finds for the items, in order."""
    return [text for _, inputs in planned(items) for text in inputs]


def scifact_items(docs: list[dict]) -> list[dict]:
    """SciFact documents as ``document_ingest`` items: pasted text with the title, a url and the id."""
    return [
        {
            "title": doc["title"],
            "url": URL_PREFIX + str(doc["_id"]),
            "text": doc["text"] if doc["text"].strip() else doc["title"],
            "mime": "text/plain",
            "metadata": {"beir_id": str(doc["_id"])},
        }
        for doc in docs
    ]


# --- child: one runtime -------------------------------------------------------------------------


def run_child(args: argparse.Namespace) -> dict:
    db_name = f"{args.db}_{args.runtime.replace('-', '_')}"
    data_dir = child_start(args, db_name, prefix="ragsite-ingest-bench-")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from documents.models import Chunk, Source
    from documents.services import (
        INGEST_BATCH_DOCUMENTS,
        IngestError,
        document_ingest_many,
        embedding_input,
        source_get_or_create,
    )
    from documents.signals import changes_batched
    from vectors.alongside import SyncAlongside
    from vectors.embedders import get_embedder
    from vectors.embedders.onnx import load_model_tokenizer
    from vectors.stores import get_vector_store
    from vectors.sync import SYNC_BATCH, vectors_sync_pending

    corpus = [json.loads(line) for line in open(DATASET / "corpus.jsonl")]
    if args.docs:
        corpus = corpus[: args.docs]
    slices = [corpus[i :: args.slices] for i in range(args.slices)]  # interleaved: similar slices

    embedder = get_embedder()
    # Warm-up at full length: ONNX Runtime grows its memory arena on the first long batches.
    embedder.embed_documents([d["title"] + "\n" + d["text"] for d in corpus[-2 * args.batch_size :]])
    counter = load_model_tokenizer()  # truncates at 256 like the model; counts what it sees

    db_cpu = PostgresCpu(db_name)
    source = source_get_or_create(name="scifact", kind=Source.Kind.UPLOAD)
    get_vector_store()  # open (not create) the store: part of process start, not of ingesting
    variants = args.variants.split(",")
    rows = []
    keys = (
        "pipe_s",
        "ingest_s",
        "sync_s",
        "embed_in_sync_s",
        "raw_s",
        "pipe_cpu",
        "pipe_db_cpu",
        "raw_cpu",
        "chunks",
        "tokens",
        "docs",
    )
    totals = {v: dict.fromkeys(keys, 0.0) for v in variants}
    failed = cache_hits = embedded = 0
    load_before = os.getloadavg()

    def ingest(docs: list[dict], added: list, alongside=None) -> None:
        nonlocal failed
        # As `manage.py ingest` stores files: batches of INGEST_BATCH_DOCUMENTS, one transaction each.
        for start in range(0, len(docs), INGEST_BATCH_DOCUMENTS):
            for result in document_ingest_many(
                source=source, items=scifact_items(docs[start : start + INGEST_BATCH_DOCUMENTS])
            ):
                if isinstance(result, IngestError):
                    failed += 1
                    continue
                added.extend(result.added_chunk_ids)
                if alongside is not None:
                    alongside.stored(result.chunks_added)

    with RssSampler(on_tick=db_cpu.sample) as sampler:
        for number, docs in enumerate(slices, start=1):
            # Variants alternate slice by slice, and so does the order of pipeline and raw (in
            # pairs of slices, so each variant gets both orders): a load that drifts during the
            # run then favours no side.
            variant = variants[(number - 1) % len(variants)]
            raw_first = ((number - 1) // len(variants)) % 2 == 1
            inputs = planned_inputs(scifact_items(docs))
            tokens = sum(len(e.ids) for e in counter.encode_batch(inputs))
            if raw_first:
                raw_s, raw_cpu = raw_embed(embedder, inputs, call_size=SYNC_BATCH, sampler=sampler)
            sampler.phase = "pipeline"
            embed_timer = TimedCalls(embedder, "embed_documents").start()
            added: list = []
            cpu0, db0, t0 = time.process_time(), db_cpu.total(), time.perf_counter()
            if variant == "alongside":
                # What `manage.py ingest` does with a remote embedder: embed full batches while
                # storing, then the rest.
                alongside = SyncAlongside()
                alongside.start()
                with changes_batched(embed_here=True):
                    ingest(docs, added, alongside)
                    t_ingested = time.perf_counter()
                    report = alongside.finish()
            else:  # what `manage.py ingest` does with a local model: store every document, then embed
                with changes_batched(embed_here=True):
                    ingest(docs, added)
                t_ingested = time.perf_counter()
                report = vectors_sync_pending()
            t1, cpu1 = time.perf_counter(), time.process_time()
            db1 = db_cpu.total()
            embed_timer.stop()
            sampler.phase = "between"
            if not raw_first:
                raw_s, raw_cpu = raw_embed(embedder, inputs, call_size=SYNC_BATCH, sampler=sampler)
            if (
                report.stopped_by
                or report.errors
                or Chunk.objects.filter(pk__in=added).exclude(index_status=Chunk.IndexStatus.INDEXED).exists()
            ):
                raise SystemExit(f"sync did not finish cleanly: {report}")
            chunks = list(Chunk.objects.filter(pk__in=added))
            if sorted(inputs) != sorted(embedding_input(c, c.context) for c in chunks):
                raise SystemExit("the raw run's inputs differ from what the pipeline stored")
            cache_hits += report.cache_hits
            embedded += report.embedded
            t2, t3, cpu2, cpu3 = 0.0, raw_s, 0.0, raw_cpu

            row = {
                "slice": number,
                "pipeline": variant,
                "raw_first": raw_first,
                "docs": len(docs),
                "chunks": len(chunks),
                "tokens": tokens,
                "pipeline_s": round(t1 - t0, 3),
                "ingest_s": round(t_ingested - t0, 3),
                "sync_s": round(t1 - t_ingested, 3),
                "embed_in_sync_s": round(embed_timer.seconds, 3),
                "raw_s": round(t3 - t2, 3),
                "ratio": round((t3 - t2) / (t1 - t0), 3),
                "pipeline_cpu_s": round(cpu1 - cpu0, 3),
                "pipeline_db_cpu_s": round(db1 - db0, 3),
                "raw_cpu_s": round(cpu3 - cpu2, 3),
                "load_1min": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            t = totals[variant]
            for key, value in (
                ("pipe_s", t1 - t0),
                ("ingest_s", t_ingested - t0),
                ("sync_s", t1 - t_ingested),
                ("embed_in_sync_s", embed_timer.seconds),
                ("raw_s", t3 - t2),
                ("pipe_cpu", cpu1 - cpu0),
                ("pipe_db_cpu", db1 - db0),
                ("raw_cpu", cpu3 - cpu2),
                ("chunks", len(chunks)),
                ("tokens", tokens),
                ("docs", len(docs)),
            ):
                t[key] += value
    load_after = os.getloadavg()
    status = proc_status()
    points = get_vector_store().count()
    indexed = Chunk.objects.filter(index_status=Chunk.IndexStatus.INDEXED).count()
    chunk_total = int(sum(t["chunks"] for t in totals.values()))
    token_total = int(sum(t["tokens"] for t in totals.values()))

    def summary(variant: str) -> dict:
        t = totals[variant]
        mine = [r for r in rows if r["pipeline"] == variant]
        pipe_cpu_all = t["pipe_cpu"] + t["pipe_db_cpu"]
        return {
            "slices": len(mine),
            "docs": int(t["docs"]),
            "chunks": int(t["chunks"]),
            "tokens": int(t["tokens"]),
            "pipeline": {
                "seconds": round(t["pipe_s"], 2),
                "storing_seconds": round(t["ingest_s"], 2),
                "seconds_after_storing": round(t["sync_s"], 2),
                "embed_seconds_in_sync": round(t["embed_in_sync_s"], 2),
                "chunks_per_s": round(t["chunks"] / t["pipe_s"], 2),
                "tokens_per_s": round(t["tokens"] / t["pipe_s"], 1),
                "cpu_seconds_process": round(t["pipe_cpu"], 2),
                "cpu_seconds_postgres": round(t["pipe_db_cpu"], 2),
                "chunks_per_cpu_s": round(t["chunks"] / pipe_cpu_all, 2),
            },
            "raw": {
                "seconds": round(t["raw_s"], 2),
                "chunks_per_s": round(t["chunks"] / t["raw_s"], 2),
                "tokens_per_s": round(t["tokens"] / t["raw_s"], 1),
                "cpu_seconds": round(t["raw_cpu"], 2),
                "chunks_per_cpu_s": round(t["chunks"] / t["raw_cpu"], 2),
            },
            "ratio_wall": round(t["raw_s"] / t["pipe_s"], 3),
            "ratio_cpu": round(t["raw_cpu"] / pipe_cpu_all, 3),
            "embedder_share": round(t["embed_in_sync_s"] / t["pipe_s"], 3),
            "slice_ratio_median": round(statistics.median(r["ratio"] for r in mine), 3),
            "slice_ratio_min": round(min(r["ratio"] for r in mine), 3),
            "slice_ratio_max": round(max(r["ratio"] for r in mine), 3),
        }

    result = {
        "runtime": args.runtime,
        "model_id": embedder.model_id,
        "batch_size": args.batch_size,
        "sync_batch": SYNC_BATCH,
        "docs": sum(len(s) for s in slices),
        "failed_docs": failed,
        "slices": args.slices,
        "chunks": chunk_total,
        "chunks_indexed": indexed,
        "points": points,
        "tokens": token_total,
        "mean_tokens_per_chunk": round(token_total / max(chunk_total, 1), 1),
        "embedded": embedded,
        "cache_hits": cache_hits,
        "pipelines": {v: summary(v) for v in variants},
        "rss_mb": {
            "peak_pipeline_phase": round(sampler.peaks.get("pipeline", 0.0), 1),
            "peak_raw_phase": round(sampler.peaks.get("raw", 0.0), 1),
            "peak_process_vmhwm": round(status["VmHWM"], 1),
            "end": round(status["VmRSS"], 1),
        },
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "slices_detail": rows,
    }
    get_vector_store().close()
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
        from django.db import connections

        connections.close_all()
        import psycopg

        with psycopg.connect(database_url(args.database_url, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    else:
        result["kept"] = {"database": db_name, "data_dir": str(data_dir)}
    return result


# --- parent -------------------------------------------------------------------------------------


def cpu_pairs(report: dict) -> str:
    """How often `alongside` cost more CPU than `sequential` on the neighbouring slice (same load)."""
    out = []
    for rt, r in report["runtimes"].items():
        rows = {row["slice"]: row for row in r.get("slices_detail", [])}

        def cpu_ratio(row: dict) -> float:
            return row["raw_cpu_s"] / (row["pipeline_cpu_s"] + row["pipeline_db_cpu_s"])

        pairs = [
            (cpu_ratio(row), cpu_ratio(rows[n + 1]))
            for n, row in rows.items()
            if row["pipeline"] == "alongside" and rows.get(n + 1, {}).get("pipeline") == "sequential"
        ]
        if pairs:
            lower = sum(a < b for a, b in pairs)
            out.append(f"{rt}: lower in {lower} of {len(pairs)}")
    return "; ".join(out) or "not measured"


def markdown(report: dict) -> str:
    lines = [
        "# Ingestion throughput: pipeline vs raw embedder (SciFact)",
        "",
        "Whole pipeline (`document_ingest_many` over every document, in `manage.py ingest`'s batches of "
        "`INGEST_BATCH_DOCUMENTS`, inside `changes_batched`, embedding through "
        "`vectors.sync` into a fresh embedded qdrant-edge store; fresh PostgreSQL database) beside "
        "`embedder.embed_documents` alone on exactly the chunk inputs the pipeline embedded, same embedder "
        "object (runtime, threads, batch size), same call size as the sync. Measured slice by slice in one "
        "run, pipeline and raw back to back on each slice's chunks, in alternating order (raw first on even "
        "slices), so both see the same load on the 2 shared cores and a load that drifts favours neither. "
        "`sequential` = what `manage.py ingest` does with the local model: store every document of the slice, "
        "then `vectors_sync_pending`; `alongside` = what it does with a remote embedder (measured here with the "
        "local one, to choose): store the documents in the same batches while a `SyncAlongside` embeds each full "
        "batch of 256 new chunks in a thread (cache, upsert and status updates in the storing thread between "
        "storing batches), "
        "then embed the rest. The variants alternate slice by slice. Script: `bench/ingest_bench.py`.",
        "",
        "| runtime | pipeline | docs | chunks | pipeline chunks/s | pipeline tokens/s | raw chunks/s | raw tokens/s | "
        "**ratio pipeline/raw (wall)** | ratio (CPU) | slice ratios min / median / max | embedder share of "
        "pipeline time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rt, r in report["runtimes"].items():
        for name, p in r["pipelines"].items():
            lines.append(
                f"| {rt} | {name} | {p['docs']} | {p['chunks']} | {p['pipeline']['chunks_per_s']} | "
                f"{p['pipeline']['tokens_per_s']:.0f} | {p['raw']['chunks_per_s']} | {p['raw']['tokens_per_s']:.0f} | "
                f"**{p['ratio_wall']}** | {p['ratio_cpu']} | {p['slice_ratio_min']} / {p['slice_ratio_median']} / "
                f"{p['slice_ratio_max']} | {p['pipeline']['embed_seconds_in_sync'] / p['pipeline']['seconds']:.3f} |"
            )
    lines += [
        "",
        "Where the time goes (seconds, summed over the variant's slices):",
        "",
        "| runtime | pipeline | pipeline s | storing (document_ingest_many loop; alongside: embedding meanwhile) | "
        "after storing | embedding inside the pipeline | raw s | CPU s pipeline: process + PostgreSQL | CPU s raw |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rt, r in report["runtimes"].items():
        for name, p in r["pipelines"].items():
            q = p["pipeline"]
            lines.append(
                f"| {rt} | {name} | {q['seconds']} | {q['storing_seconds']} | {q['seconds_after_storing']} | "
                f"{q['embed_seconds_in_sync']} | {p['raw']['seconds']} | {q['cpu_seconds_process']} + "
                f"{q['cpu_seconds_postgres']} | {p['raw']['cpu_seconds']} |"
            )
    lines += [
        "",
        "| runtime | docs | chunks | tokens/chunk | embedded / cache hits | peak RSS MB (pipeline / raw phase / VmHWM) "
        "| load average 1 min (before, after) | run s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rt, r in report["runtimes"].items():
        m = r["rss_mb"]
        lines.append(
            f"| {rt} | {r['docs']} ({r['failed_docs']} rejected) | {r['chunks']} ({r['chunks_indexed']} indexed, "
            f"{r['points']} points) | {r['mean_tokens_per_chunk']} | {r['embedded']} / {r['cache_hits']} | "
            f"{m['peak_pipeline_phase']} / {m['peak_raw_phase']} / {m['peak_process_vmhwm']} | "
            f"{r['load_average_before'][0]}, {r['load_average_after'][0]} | {r.get('wall_seconds_total', '')} |"
        )
    lines += [
        "",
        "- Goal: pipeline >= 0.9 x raw. The wall ratio is the headline; the CPU ratio (raw CPU / pipeline CPU "
        "including its PostgreSQL backends) is what each would cost on an otherwise idle machine, and what bounds "
        "the wall ratio when the embedder keeps both cores busy. With the load of other jobs on these cores, single "
        "slices' wall ratios range widely (see the min / max); the CPU ratio is the steadier figure.",
        "- Why the command does not overlap with the local model: storing is CPU, not waiting (in batches of "
        "64, ~0.9 ms of Python and ~0.6 ms of PostgreSQL per SciFact document; ~2.4 + 1.3 ms stored one by "
        "one), so overlapping it with an embedder that already uses both cores hides little and costs more "
        "CPU (the `alongside` CPU ratio vs "
        f"`sequential`'s in neighbouring slice pairs: {cpu_pairs(report)}); the two pipelines' wall ratios "
        "differ by about the run-to-run noise. With a remote embedder the cores are free and overlapping "
        "hides the storing time.",
        "- Embedder share: time inside `embed_documents` during the pipeline / pipeline time. It equals the "
        "ratio when the embedder runs as fast inside the pipeline as alone, and it does not depend on the load "
        "changing between the pipeline and raw phases of a slice, which on these shared cores moves single "
        "slices by +-30%.",
        "- tokens: what the model sees per chunk input (context line + text, with [CLS]/[SEP], truncated at 256).",
        "- Absolute chunks/s depend on the load from other jobs on these 2 cores; compare ratios, not absolute "
        "numbers, across runs. Peak RSS is the bench process (Django + model + embedded store), not PostgreSQL.",
    ]
    for rt, r in report["runtimes"].items():
        lines.append(
            f"- {rt}: model `{r['model_id']}`, EMBEDDING_BATCH_SIZE {r['batch_size']}, sync batch {r['sync_batch']}, "
            f"{r['slices']} slices."
        )
    lines.append(
        f"- Versions: {json.dumps(report['versions'])}; CPU: {report['cpu']}; measured {report['measured_at']}."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default="onnx-int8", help="comma-separated: onnx-int8, onnx-fp32, torch")
    parser.add_argument("--docs", type=int, default=0, help="first N documents (0 = all 5,183)")
    parser.add_argument("--slices", type=int, default=16, help="slices; the variants alternate over them")
    parser.add_argument(
        "--variants",
        default="alongside,sequential",
        help="pipelines, alternating slice by slice: alongside (the command), sequential (store, then embed)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="EMBEDDING_BATCH_SIZE")
    parser.add_argument("--db", default="ragsite_perf_ingest", help="database name prefix (dropped and recreated)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB_URL))
    parser.add_argument("--onnx-dir", help="an existing ONNX export to copy (default: look in var/models)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and data folder (for search_scale_bench)"
    )
    parser.add_argument("--no-write", action="store_true", help="print results, do not update bench/results")
    parser.add_argument("--render", action="store_true", help="rewrite ingest.md from ingest.json and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--runtime", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = run_child(args)
        Path(args.child).write_text(json.dumps(result, indent=2))
        return

    results_path = RESULTS / "ingest.json"
    report = json.loads(results_path.read_text()) if results_path.exists() else {"runtimes": {}}
    if args.render:
        (RESULTS / "ingest.md").write_text(markdown(report))
        return
    for runtime in [r.strip() for r in args.runtimes.split(",") if r.strip()]:
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(out),
            "--runtime",
            runtime,
            "--docs",
            str(args.docs),
            "--slices",
            str(args.slices),
            "--variants",
            args.variants,
            "--batch-size",
            str(args.batch_size),
            "--db",
            args.db,
            "--database-url",
            args.database_url,
        ]
        if args.onnx_dir:
            cmd += ["--onnx-dir", args.onnx_dir]
        if args.keep:
            cmd.append("--keep")
        started = time.perf_counter()
        subprocess.run(cmd, check=True)
        result = json.loads(out.read_text())
        out.unlink()
        result["wall_seconds_total"] = round(time.perf_counter() - started, 1)
        print(json.dumps({k: v for k, v in result.items() if k != "slices_detail"}, indent=2), flush=True)
        report["runtimes"][runtime] = result
    report["versions"] = versions()
    report["cpu"] = cpu_model()
    report["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "ingest.md").write_text(markdown(report))
        print(f"wrote {results_path} and ingest.md")


if __name__ == "__main__":
    main()
