"""Memory of one large file: peak RSS of `manage.py ingest` (store, then embed in the foreground).

Run from the project root; it creates (and drops first) its own database and data folder per size:

    .venv/bin/python bench/memory_bench.py                      # 1, 5 and 20 MB
    .venv/bin/python bench/memory_bench.py --sizes 1,5          # a quicker subset

Each size is one plain-text file of that many bytes, made of SciFact abstracts (title, text) in
corpus order and repeated as needed; every abstract carries a line "Record N." so repeated
abstracts are new text and the embedding cache does not hide the embedding work. The file goes
through the real command, `manage.py ingest FILE` with the local model (`EMBEDDING_BACKEND=local`,
the default): parse, chunk and store in one transaction, then embed every pending chunk in the
foreground (`documents.sync.vectors_sync_pending`, the worker's sync, in batches of SYNC_BATCH)
into a fresh embedded qdrant-edge store. Fresh PostgreSQL database and data folder per size.

Peak RSS is the command process's VmHWM, read from /proc every 0.1 s until it exits. Idle is a
process of the same command line (`manage.py shell`) after it loaded Django and the embedder and
embedded one text: what any process that embeds holds before it sees a document. The bar
(issue 15): peak minus idle under 1 GB at 20 MB, and flat in the document's size. Times: storing
(until the command prints its "ingested" line) and embedding (the rest), wall clock on shared
cores (the load average is recorded). Writes bench/results/memory.json and bench/results/memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT.parent / "shared" / "datasets" / "scifact-train"
RESULTS = ROOT / "bench" / "results"
DEFAULT_DB_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DB_NAME = "ragsite_memory_bench"

IDLE_PROBE = """
from documents.embeddings import get_embedder
get_embedder().embed_documents(["warm up"])
for line in open("/proc/self/status"):
    if line.startswith(("VmRSS", "VmHWM")):
        print(line.strip())
"""


def database_url(base: str, name: str) -> str:
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}"


def recreate_database(base_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(base_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_text(dataset: Path, size_bytes: int) -> str:
    """SciFact abstracts, each with a distinct record line, repeated to exactly size_bytes (ASCII-safe cut)."""
    abstracts = [json.loads(line) for line in (dataset / "corpus.jsonl").open()]
    parts: list[str] = []
    total = 0
    n = 0
    while total < size_bytes:
        doc = abstracts[n % len(abstracts)]
        part = f"{doc['title']}\n\nRecord {n}. {doc['text']}\n\n"
        parts.append(part)
        total += len(part.encode())
        n += 1
    data = "".join(parts).encode()[:size_bytes]
    return data.decode("utf-8", errors="ignore")


def proc_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def run_env(args: argparse.Namespace, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="ragsite.settings",
        DATABASE_URL=database_url(args.database_url, DB_NAME),
        DATA_DIR=str(data_dir),
        EMBEDDING_BACKEND="local",
        EMBEDDING_MODEL_DIR=str(args.model_dir),
    )
    return env


def manage(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *argv], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )


def idle_rss(env: dict[str, str]) -> float:
    out = manage(env, "shell", "-c", IDLE_PROBE).stdout
    values = dict(line.split(":", 1) for line in out.splitlines() if line.startswith("Vm"))
    return int(values["VmRSS"].split()[0]) / 1024


def run_size(args: argparse.Namespace, size_mb: float, workdir: Path) -> dict:
    data_dir = workdir / f"data_{size_mb:g}mb"
    data_dir.mkdir()
    env = run_env(args, data_dir)
    recreate_database(args.database_url, DB_NAME)
    manage(env, "migrate", "--noinput", "-v", "0")
    idle = idle_rss(env)

    path = workdir / f"scifact_{size_mb:g}mb.txt"
    path.write_text(make_text(Path(args.dataset), int(size_mb * 1_000_000)))
    size_bytes = path.stat().st_size
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "ingest", str(path), "--source", "bench"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stored_at: list[float] = []
    lines: list[str] = []

    def read_stdout() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("ingested into") and not stored_at:
                stored_at.append(time.perf_counter())

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    peak_kb = 0
    samples: list[tuple[float, int]] = []
    while proc.poll() is None:
        hwm = proc_kb(proc.pid, "VmHWM")
        rss = proc_kb(proc.pid, "VmRSS")
        if hwm:
            peak_kb = max(peak_kb, hwm)
        if rss:
            samples.append((round(time.perf_counter() - started, 1), rss))
        time.sleep(0.1)
    ended = time.perf_counter()
    reader.join(timeout=10)
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"ingest of {size_mb} MB failed ({proc.returncode}):\n{stderr[-4000:]}")
    stored = (stored_at[0] if stored_at else ended) - started
    summary = [line for line in lines if line.startswith(("ingested", "embedded"))]
    chunks = _count_chunks(env)
    drop_database(args.database_url, DB_NAME)
    shutil.rmtree(data_dir, ignore_errors=True)
    path.unlink()
    peak = peak_kb / 1024
    # Coarse RSS curve (every ~2 s) for the Markdown's reader to see where memory goes.
    curve = [(t, round(kb / 1024)) for t, kb in samples[:: max(1, len(samples) // 40)]]
    return {
        "size_mb": size_mb,
        "bytes": size_bytes,
        "chunks": chunks,
        "idle_rss_mb": round(idle, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_above_idle_mb": round(peak - idle, 1),
        "store_s": round(stored, 1),
        "embed_s": round(ended - started - stored, 1),
        "total_s": round(ended - started, 1),
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
        "command_output": summary,
        "rss_curve_s_mb": curve,
    }


def _count_chunks(env: dict[str, str]) -> dict:
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT index_status, count(*) FROM documents_chunk GROUP BY 1").fetchall()
        longest = conn.execute("SELECT coalesce(max(length(text)), 0) FROM documents_chunk").fetchone()[0]
    return {**{status: count for status, count in rows}, "longest_chars": longest}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(report: dict) -> str:
    rows = report["runs"]
    out = [
        "# Memory: one large text file through `manage.py ingest` (store, then embed)",
        "",
        f"{report['machine']}; Python {report['python']}. Local model ({report['embedding_runtime']}), "
        "embedded qdrant-edge store, fresh PostgreSQL database per size. See bench/memory_bench.py.",
        "",
        "| file | chunks | idle RSS MB | peak RSS MB | peak above idle MB | store s | embed s | total s | load 1 min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chunks = r["chunks"]
        out.append(
            f"| {r['size_mb']:g} MB | {chunks.get('indexed', 0)} indexed, {chunks.get('failed', 0)} failed, "
            f"{chunks.get('pending', 0)} pending; longest {chunks['longest_chars']} chars | {r['idle_rss_mb']} | "
            f"{r['peak_rss_mb']} | **{r['peak_above_idle_mb']}** | {r['store_s']} | {r['embed_s']} | {r['total_s']} | "
            f"{r['load_1min_before']} → {r['load_1min_after']} |"
        )
    out += [
        "",
        "Before the fixes of issue 15 (same command, SciFact text): 5 MB peaked at 7.6 GB and took 9 minutes; "
        "a 1 MB file peaked at 1.87 GB while embedding (each batch of 256 chunks joined 256 copies of the "
        "document's text and search vector), and chunking held every token encoding of the document at once.",
        "",
        "Idle is a `manage.py shell` that loaded Django and the embedder and embedded one text. Peak is the "
        "command's VmHWM. Times are wall clock on 2 CPU cores shared with other jobs (load average shown); "
        "embedding dominates and is linear in the number of chunks.",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,5,20", help="file sizes in MB, comma-separated")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB_URL))
    parser.add_argument("--dataset", default=str(DATASET), help="a BEIR folder with corpus.jsonl")
    parser.add_argument("--model-dir", default=str(ROOT / "var" / "models"), help="EMBEDDING_MODEL_DIR to use")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="ragsite-memory-bench-") as tmp:
        for size in sizes:
            print(f"{size:g} MB ...", flush=True)
            result = run_size(args, size, Path(tmp))
            print(json.dumps({k: v for k, v in result.items() if k != "rss_curve_s_mb"}), flush=True)
            runs.append(result)
    report = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "embedding_runtime": os.environ.get("EMBEDDING_RUNTIME", "onnx-int8"),
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "memory.md").write_text(markdown(report))
    print((RESULTS / "memory.md").read_text())


if __name__ == "__main__":
    main()
