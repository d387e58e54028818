"""The small harness every bench shares: datasets, metrics, timing, the machine, results files.

Metrics are trec_eval's own (``search.evaluation.run_scores``, through pytrec_eval), the same
code ``manage.py evaluate`` reports with, so a bench figure and an evaluate figure agree.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ROOT.parent / "shared" / "datasets"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from search.evaluation import NDCG_10, RECALL_100, Dataset, load_dataset, run_scores  # noqa: E402

__all__ = [
    "RESULTS",
    "ROOT",
    "Dataset",
    "cpu_model",
    "drop_database",
    "free_port",
    "fresh_database",
    "load_dataset",
    "percentile",
    "percentiles",
    "proc_status",
    "run_scores",
    "score",
    "versions",
    "write_results",
]


# --- metrics --------------------------------------------------------------------------------------


def score(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> tuple[float, float]:
    """Mean nDCG@10 and Recall@100 (trec_eval's) of ranked document ids per query, rounded."""
    if not rankings:
        return 0.0, 0.0
    scores = run_scores(rankings, qrels)
    ndcg = statistics.fmean(s[NDCG_10] for s in scores.values())
    recall = statistics.fmean(s[RECALL_100] for s in scores.values())
    return round(ndcg, 4), round(recall, 4)


# --- timing ---------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100 (0.0 for no values)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def percentiles(ms: list[float], qs: Iterable[float] = (50, 95)) -> dict:
    """{"p50_ms": ..., "p95_ms": ..., "n": ...} of millisecond samples, rounded to 0.01 ms."""
    out: dict = {f"p{q:g}_ms": (round(percentile(ms, q), 2) if ms else None) for q in qs}
    out["n"] = len(ms)
    return out


# --- the machine ----------------------------------------------------------------------------------


def proc_status(*keys: str, pid: int | str = "self") -> dict[str, float]:
    """kB fields of /proc/PID/status in MB (default VmRSS and VmHWM, the peak)."""
    wanted = keys or ("VmRSS", "VmHWM")
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in wanted:
                out[key] = int(value.split()[0]) / 1024
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(*packages: str) -> dict[str, str]:
    """Python's and these distributions' versions (the usual stack when none is named)."""
    names = packages or ("django", "onnxruntime", "torch", "sentence-transformers", "qdrant-edge-py", "psycopg")
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# --- processes and databases ----------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database(url: str, name: str) -> str:
    """Drop and create database ``name`` on the server of ``url``; the URL of the new database."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(parts.path.lstrip("/"))))


# --- results --------------------------------------------------------------------------------------


def write_results(name: str, report: dict, markdown: str, *, results_dir: Path = RESULTS) -> Path:
    """Write results/NAME.json and results/NAME.md; returns the JSON path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    return path
