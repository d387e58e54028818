"""Local embedder benchmark: speed of torch fp32 vs ONNX fp32 vs ONNX int8, and retrieval quality.

Run from the project root (takes ~30-60 min on 2 shared cores; embeddings are cached, so a
re-run only re-times):

    OMP_NUM_THREADS=2 .venv/bin/python bench/embedder_bench.py            # speed + quality
    .venv/bin/python bench/embedder_bench.py --skip-quality --speed-docs 128  # quick speed check

Speed: chunks/s and tokens/s on the first --speed-docs SciFact documents (title + "\\n" + text,
truncated by the model at 256 tokens), every runtime at each batch size, same thread count,
measured in interleaved rounds (best round kept) so that load from other processes hits every
runtime alike. Quality: nDCG@10 and Recall@100 on SciFact train (all 5,183 documents, queries
with qrels), brute-force cosine in numpy over whole-document embeddings.

ONNX Runtime's CPU memory arena: a runtime name may end in /keep or /off (e.g. onnx-int8/keep) to
run the encoder with the arena kept as it grew (ORT's default) or turned off, beside the
service's policy (shrink the arena after each call that ran document batches); the speed table
compares them side by side and the memory table shows what each holds after one call:

    .venv/bin/python bench/embedder_bench.py --skip-quality --runtimes torch,onnx-fp32,onnx-int8,onnx-int8/keep,onnx-int8/off

Writes bench/results/embedder.json and bench/results/embedder.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
from harness import cpu_model, score, versions  # noqa: E402

from vectors.embedders import onnx as embeddings_onnx  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "scifact-train"
RESULTS = ROOT / "bench" / "results"
# ONNX variants beyond the shipped ones, built from the exported fp32 graph to justify the recipe.
EXTRA_INT8 = {"onnx-int8-per-tensor": {"op_types": ["MatMul", "Attention"], "per_channel": False}}


def load_corpus(dataset: Path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with open(dataset / "corpus.jsonl") as f:
        for line in f:
            doc = json.loads(line)
            ids.append(doc["_id"])
            texts.append(f"{doc.get('title', '')}\n{doc.get('text', '')}")
    return ids, texts


def load_queries(dataset: Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The judged train queries and their qrels, read by the app's own BEIR loader."""
    from search.evaluation import load_dataset

    loaded = load_dataset(dataset, "train")
    return loaded.queries, loaded.qrels


def make_encoder(runtime: str, *, threads: int, batch_size: int, onnx_dir: Path):
    """A callable texts -> (n, 384) unit vectors for one runtime, as the service would run it."""
    if runtime == "torch":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        model = SentenceTransformer(str(embeddings_onnx.packaged_model_path()), device="cpu")
        return lambda texts: model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
    runtime, _, arena = runtime.partition("/")
    if runtime in EXTRA_INT8:
        path = onnx_dir / f"{runtime}.onnx"
        if not path.exists():
            embeddings_onnx._quantize(onnx_dir / embeddings_onnx.FP32_FILE, path, **EXTRA_INT8[runtime])
    else:
        path = onnx_dir / embeddings_onnx.onnx_file_for(runtime)
    return embeddings_onnx.OnnxEncoder(path, threads=threads, batch_size=batch_size, arena=arena or "shrink").encode


def ndcg_recall(scores: np.ndarray, query_ids: list[str], doc_ids: list[str], qrels: dict[str, dict[str, int]]):
    """nDCG@10 and Recall@100 of exact (brute-force) retrieval by these similarity scores."""
    top = np.argsort(-scores, axis=1)[:, :100]
    return score({qid: [doc_ids[i] for i in top[row]] for row, qid in enumerate(query_ids)}, qrels)


def rss_probe(runtime: str, threads: int, batch_size: int, onnx_dir: Path) -> None:
    """Child process: load one runtime, embed a batch, print peak RSS and RSS after the call (MB) as JSON."""
    _, texts = load_corpus(DATASET)
    encode = make_encoder(runtime, threads=threads, batch_size=batch_size, onnx_dir=onnx_dir)
    encode(texts[:batch_size])
    # VmHWM, not ru_maxrss: the latter survives execve, so a child would report the parent's peak.
    status = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith(("VmHWM:", "VmRSS:"))
    }
    # RSS after the call is what a long-running process keeps between batches (the arena's hold).
    print(json.dumps({"peak_rss_mb": status["VmHWM"], "rss_after_mb": status["VmRSS"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="16,32,64")
    parser.add_argument("--runtimes", default="torch,onnx-fp32,onnx-int8")
    parser.add_argument("--speed-docs", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quality-runtimes", default="onnx-int8,torch,onnx-fp32,onnx-int8-per-tensor")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/ragsite-embedder-bench"))
    parser.add_argument("--output", type=Path, default=RESULTS / "embedder.json")
    parser.add_argument("--rss-probe", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    onnx_dir = args.cache_dir / "onnx"
    if args.rss_probe:
        rss_probe(args.rss_probe, args.threads, int(args.batch_sizes.split(",")[0]), onnx_dir)
        return
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    embeddings_onnx.export_onnx_model(onnx_dir)
    export_seconds = time.perf_counter() - t0

    doc_ids, texts = load_corpus(DATASET)
    queries, qrels = load_queries(DATASET)
    runtimes = args.runtimes.split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    previous = json.loads(args.output.read_text()) if args.output.exists() else {}
    result: dict = {
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
            "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
            "versions": versions("torch", "sentence-transformers", "onnxruntime", "onnx", "numpy"),
        },
        "int8_recipe": {"op_types": embeddings_onnx.INT8_OP_TYPES, "per_channel": embeddings_onnx.INT8_PER_CHANNEL},
        "export_seconds": round(export_seconds, 1),
        "speed": previous.get("speed", {}),
        "quality": previous.get("quality", {}),
        "memory": previous.get("memory", {}),
    }

    if not args.skip_speed:
        result["speed"] = measure_speed(args, texts[: args.speed_docs], runtimes, batch_sizes, onnx_dir)
        result["memory"] = {
            runtime: json.loads(
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--rss-probe",
                        runtime,
                        "--threads",
                        str(args.threads),
                        "--batch-sizes",
                        str(result["speed"]["batch_size"]),
                        "--cache-dir",
                        str(args.cache_dir),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            for runtime in runtimes
        }
    if not args.skip_quality:
        batch_size = result["speed"].get("batch_size", 32)
        result["quality"] = measure_quality(
            args, args.quality_runtimes.split(","), doc_ids, texts, queries, qrels, onnx_dir, batch_size
        )
    result["machine"]["load_average_at_end"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def measure_speed(args, texts: list[str], runtimes: list[str], batch_sizes: list[int], onnx_dir: Path) -> dict:
    tokens = embeddings_onnx.OnnxEncoder(onnx_dir / embeddings_onnx.FP32_FILE, threads=1).count_tokens(texts)
    encoders = {
        (rt, bs): make_encoder(rt, threads=args.threads, batch_size=bs, onnx_dir=onnx_dir)
        for rt in runtimes
        for bs in batch_sizes
    }
    for encode in encoders.values():
        encode(texts[:8])  # warm-up: first-run allocations and lazy initialisation
    load_at_start = os.getloadavg()
    best = dict.fromkeys(encoders, float("inf"))
    best_cpu = dict.fromkeys(encoders, float("inf"))
    for round_no in range(args.rounds):
        for key, encode in encoders.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            encode(texts)
            best[key] = min(best[key], time.perf_counter() - start)
            # CPU seconds of the whole process (all threads): less sensitive than wall time to
            # other processes on the shared cores, though it counts a runtime's spin-waiting too.
            best_cpu[key] = min(best_cpu[key], time.process_time() - start_cpu)
            print(
                f"round {round_no + 1} {key[0]:>22} batch {key[1]:>3}: {len(texts) / best[key]:6.1f} chunks/s, "
                f"{len(texts) / best_cpu[key]:6.1f} chunks/cpu-s",
                flush=True,
            )
    rows = {
        f"{rt}@{bs}": {
            "runtime": rt,
            "batch_size": bs,
            "seconds": round(best[(rt, bs)], 3),
            "chunks_per_s": round(len(texts) / best[(rt, bs)], 2),
            "tokens_per_s": round(tokens / best[(rt, bs)], 1),
            "cpu_seconds": round(best_cpu[(rt, bs)], 3),
            "chunks_per_cpu_s": round(len(texts) / best_cpu[(rt, bs)], 2),
        }
        for rt, bs in encoders
    }
    # One batch size for all runtimes: the one where the int8 runtime (the candidate default) is fastest.
    fastest = "onnx-int8" if "onnx-int8" in runtimes else runtimes[0]
    chosen = min(batch_sizes, key=lambda bs: best[(fastest, bs)])
    baseline = best[("torch", chosen)] if "torch" in runtimes else None
    return {
        "docs": len(texts),
        "tokens": tokens,
        "rounds": args.rounds,
        "load_average": {"start": load_at_start[0], "end": os.getloadavg()[0]},
        "batch_size": chosen,
        "rows": rows,
        "speedup_vs_torch": {
            f"{rt}@{bs}": round(best[("torch", bs)] / best[(rt, bs)], 2) for rt, bs in encoders if "torch" in runtimes
        },
        "cpu_speedup_vs_torch": {
            f"{rt}@{bs}": round(best_cpu[("torch", bs)] / best_cpu[(rt, bs)], 2)
            for rt, bs in encoders
            if "torch" in runtimes
        },
        "speedup_vs_torch_at_chosen_batch": {rt: round(baseline / best[(rt, chosen)], 2) for rt in runtimes}
        if baseline
        else {},
    }


def measure_quality(args, runtimes, doc_ids, texts, queries, qrels, onnx_dir, batch_size) -> dict:
    query_ids = list(queries)
    query_texts = [queries[q] for q in query_ids]
    out = {}
    reference = None
    for runtime in runtimes:
        cache = args.cache_dir / f"corpus-{runtime}.npy"
        qcache = args.cache_dir / f"queries-{runtime}.npy"
        encode = None
        start = time.perf_counter()
        if cache.exists() and qcache.exists():
            doc_vectors, query_vectors = np.load(cache), np.load(qcache)
            seconds = None
        else:
            encode = make_encoder(runtime, threads=args.threads, batch_size=batch_size, onnx_dir=onnx_dir)
            doc_vectors = encode(texts)
            query_vectors = encode(query_texts)
            seconds = round(time.perf_counter() - start, 1)
            np.save(cache, doc_vectors)
            np.save(qcache, query_vectors)
        ndcg, recall = ndcg_recall(query_vectors @ doc_vectors.T, query_ids, doc_ids, qrels)
        row = {"ndcg@10": round(ndcg, 4), "recall@100": round(recall, 4), "embed_seconds": seconds}
        if reference is None and runtime == "torch":
            reference = doc_vectors
        out[runtime] = row
        print(f"quality {runtime}: {row}", flush=True)
    torch_vectors = (
        np.load(args.cache_dir / "corpus-torch.npy") if (args.cache_dir / "corpus-torch.npy").exists() else None
    )
    for runtime, row in out.items():
        if torch_vectors is not None:
            cos = (np.load(args.cache_dir / f"corpus-{runtime}.npy") * torch_vectors).sum(axis=1)
            row["cosine_to_torch_mean"] = round(float(cos.mean()), 4)
            row["cosine_to_torch_min"] = round(float(cos.min()), 4)
        if "torch" in out:
            row["ndcg@10_delta_vs_torch"] = round(row["ndcg@10"] - out["torch"]["ndcg@10"], 4)
    return {"docs": len(texts), "queries": len(query_ids), "runtimes": out}


def markdown(result: dict) -> str:
    speed, quality, memory = result.get("speed", {}), result.get("quality", {}), result.get("memory", {})
    m = result["machine"]
    load = speed.get("load_average") or {"start": m["load_average_at_start"][0], "end": m["load_average_at_end"][0]}
    lines = [
        "# Local embedder: torch fp32 vs ONNX Runtime fp32 / int8",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads per runtime; 1-minute load average "
        f"during the speed runs {load['start']:.1f} at start, {load['end']:.1f} at end (the cores are shared with "
        "other processes: compare ratios, measured side by side in interleaved rounds, not absolute figures).",
        f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}. "
        f"int8 recipe: dynamic, ops {result['int8_recipe']['op_types']}, per-channel={result['int8_recipe']['per_channel']}.",
        "",
    ]
    if speed:
        chosen = speed["batch_size"]
        lines += [
            f"## Speed ({speed['docs']} SciFact documents, {speed['tokens']} tokens after truncation at 256; best of {speed['rounds']} rounds)",
            "",
            "| runtime | batch | chunks/s | tokens/s | vs torch fp32 (same batch, wall) | chunks per CPU-s | vs torch (CPU time) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, row in speed["rows"].items():
            mark = " **" if row["batch_size"] == chosen else " "
            lines.append(
                f"| {row['runtime']} | {row['batch_size']} | {row['chunks_per_s']} | {row['tokens_per_s']} |"
                f"{mark}{speed['speedup_vs_torch'].get(key, '')}x{mark.strip()} | {row.get('chunks_per_cpu_s', '')} | "
                f"{speed.get('cpu_speedup_vs_torch', {}).get(key, '')}x |"
            )
        lines += ["", f"Chosen batch size (fastest for onnx-int8): {chosen}.", ""]
    if memory:
        lines += [
            "## Peak RSS (fresh process: load the runtime, embed one batch)",
            "",
            "| runtime | peak RSS MB | RSS after the call MB |",
            "| --- | ---: | ---: |",
        ]
        lines += [
            f"| {rt} | {row['peak_rss_mb']:.0f} | {row['rss_after_mb']:.0f} |"
            if "rss_after_mb" in row
            else f"| {rt} | {row['peak_rss_mb']:.0f} | |"
            for rt, row in memory.items()
        ]
        lines.append("")
    arenas = [rt for rt in speed.get("rows", {}) if "/" in rt.split("@")[0]] if speed else []
    if arenas:
        lines += [
            "## ONNX Runtime CPU arena (int8 runs side by side; the service shrinks the arena after each call)",
            "",
            "| variant | batch | chunks/s vs shrink (wall) | chunks per CPU-s vs shrink |",
            "| --- | ---: | ---: | ---: |",
        ]
        for key in arenas:
            row = speed["rows"][key]
            base = speed["rows"].get(f"{row['runtime'].split('/')[0]}@{row['batch_size']}")
            if base:
                lines.append(
                    f"| {row['runtime']} | {row['batch_size']} | {row['chunks_per_s'] / base['chunks_per_s']:.2f}x | "
                    f"{row['chunks_per_cpu_s'] / base['chunks_per_cpu_s']:.2f}x |"
                )
        lines.append("")
    if quality:
        lines += [
            f"## Retrieval quality (SciFact train: {quality['docs']} documents, {quality['queries']} queries; brute-force cosine)",
            "",
            "| runtime | nDCG@10 | Δ vs torch | Recall@100 | cosine to torch (mean / min) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for rt, row in quality["runtimes"].items():
            lines.append(
                f"| {rt} | {row['ndcg@10']:.4f} | {row.get('ndcg@10_delta_vs_torch', 0):+.4f} | {row['recall@100']:.4f} | "
                f"{row.get('cosine_to_torch_mean', '')} / {row.get('cosine_to_torch_min', '')} |"
            )
        lines.append("")
    runtimes = quality.get("runtimes", {}) if quality else {}
    speedups = speed.get("speedup_vs_torch_at_chosen_batch", {}) if speed else {}
    if "onnx-int8" in runtimes and "onnx-int8" in speedups:
        delta = runtimes["onnx-int8"].get("ndcg@10_delta_vs_torch", 0.0)
        met = speedups["onnx-int8"] >= 2.0 and abs(delta) <= 0.01
        cpu_speedup = speed.get("cpu_speedup_vs_torch", {}).get(f"onnx-int8@{speed['batch_size']}", "?")
        lines += [
            "## Goal (issue 9): int8 at least 2x torch fp32, nDCG@10 within 0.01",
            "",
            f"onnx-int8 vs torch fp32 at batch {speed['batch_size']}: {speedups['onnx-int8']}x (wall), "
            f"{cpu_speedup}x (CPU time); "
            f"nDCG@10 delta {delta:+.4f}: {'met' if met else 'NOT met'}.",
            "",
        ]
    lines += [
        "Re-run: `OMP_NUM_THREADS=2 .venv/bin/python bench/embedder_bench.py` (see its docstring for options; "
        "embeddings are cached under /tmp/ragsite-embedder-bench).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
