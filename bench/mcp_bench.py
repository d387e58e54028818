"""MCP `search` over Streamable HTTP vs GET /api/search/ on the same server and corpus.

    .venv/bin/python bench/mcp_bench.py                     # whole SciFact corpus, 300 queries
    .venv/bin/python bench/mcp_bench.py --docs 1000 --queries 100

What runs (the harness of load_bench.py: its Server, database and preload):
- the production command, ``gunicorn -c ragsite/gunicorn.conf.py ragsite.wsgi``, production
  settings, one worker (embedded vector store), on a database and data folder of its own;
- the SciFact abstracts ingested through the REST API, then every chunk indexed;
- one client, sequential requests over keep-alive connections, for each query and each mode
  (keyword, semantic, hybrid) in turn and interleaved, so that the machine's load (2 shared CPU
  cores) falls on all of them alike:
  - ``rest``: GET /api/search/?q=&mode=&limit=10 (httpx);
  - ``mcp_sdk``: ``search`` through the official SDK's client (``mcp.Client`` over
    ``streamable_http_client``, protocol 2026-07-28, one connection for the run): what an agent
    built on the SDK sees, the client's own parsing included;
  - ``mcp_post``: the same JSON-RPC ``tools/call`` as one plain POST (httpx): the server's side.
  Each is checked to return the same hits as REST. A warm-up pass is not counted.

Recorded: p50/p95 per mode and kind, the ratio to REST's p50 (goal: MCP <= 1.2x), the corpus size,
os.getloadavg() before and after. Writes bench/results/mcp.json and bench/results/mcp.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import DATASET, RESULTS, Server, drop_database, fresh_database, percentile, preload, read_jsonl

MODES = ("keyword", "semantic", "hybrid")
KINDS = ("rest", "mcp_sdk", "mcp_post")


def hits(results: list[dict]) -> list[tuple]:
    return [(h["chunk_id"], h["document_id"], h["rank"]) for h in results]


async def measure(base: str, key: str, queries: list[str], warmup: int) -> tuple[dict, int]:
    headers = {"Authorization": f"Bearer {key}"}
    times: dict[str, dict[str, list[float]]] = {m: {k: [] for k in KINDS} for m in MODES}
    mismatches = 0
    post_headers = {
        **headers,
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
    }
    with httpx.Client(base_url=base, headers=headers, timeout=60) as rest:
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
                for n, query in enumerate(queries):
                    for mode in MODES:
                        started = time.perf_counter()
                        response = rest.get("/api/search/", params={"q": query, "mode": mode, "limit": 10})
                        rest_ms = (time.perf_counter() - started) * 1000
                        response.raise_for_status()
                        expected = hits(response.json()["results"])

                        started = time.perf_counter()
                        result = await client.call_tool("search", {"query": query, "mode": mode, "limit": 10})
                        sdk_ms = (time.perf_counter() - started) * 1000
                        if result.is_error:
                            raise SystemExit(f"MCP search failed: {result.content[0].text}")
                        sdk_hits = hits(json.loads(result.content[0].text)["results"])

                        message = {
                            "jsonrpc": "2.0",
                            "id": n,
                            "method": "tools/call",
                            "params": {
                                "name": "search",
                                "arguments": {"query": query, "mode": mode, "limit": 10},
                                "_meta": {
                                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                    "io.modelcontextprotocol/clientInfo": {"name": "mcp-bench", "version": "1"},
                                    "io.modelcontextprotocol/clientCapabilities": {},
                                },
                            },
                        }
                        started = time.perf_counter()
                        # 2026-07-28 routing headers: Mcp-Method and Mcp-Name mirror the body
                        routing = {"Mcp-Method": "tools/call", "Mcp-Name": "search"}
                        posted = rest.post("/mcp", content=json.dumps(message), headers={**post_headers, **routing})
                        post_ms = (time.perf_counter() - started) * 1000
                        posted.raise_for_status()
                        body = posted.json()
                        if "error" in body:
                            raise SystemExit(f"MCP POST failed: {body['error']}")
                        post_hits = hits(json.loads(body["result"]["content"][0]["text"])["results"])

                        if not (expected == sdk_hits == post_hits):
                            mismatches += 1
                        if n >= warmup:
                            times[mode]["rest"].append(rest_ms)
                            times[mode]["mcp_sdk"].append(sdk_ms)
                            times[mode]["mcp_post"].append(post_ms)
    return times, mismatches


def summarise(times: dict) -> dict:
    out = {}
    for mode, kinds in times.items():
        rest_p50 = percentile(kinds["rest"], 50)
        out[mode] = {
            kind: {
                "n": len(values),
                "p50_ms": round(percentile(values, 50), 2),
                "p95_ms": round(percentile(values, 95), 2),
                "p50_vs_rest": round(percentile(values, 50) / rest_p50, 3),
            }
            for kind, values in kinds.items()
        }
    return out


def markdown(r: dict) -> str:
    lines = [
        "# MCP `search` over Streamable HTTP vs `GET /api/search/`",
        "",
        f"Corpus: {r['corpus']['documents']} SciFact abstracts, {r['corpus']['chunks']} chunks. "
        f"{r['queries']} queries x 3 modes, one client, sequential, interleaved; {r['warmup']} warm-up queries not counted. "
        f"Load average before/after: {r['loadavg_before']} / {r['loadavg_after']} (2 shared CPU cores). "
        f"Hit lists differing between the three: {r['mismatches']}.",
        "",
        "| mode | REST p50 | MCP (SDK client) p50 | ratio | MCP (plain POST) p50 | ratio | REST p95 | MCP SDK p95 | MCP POST p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, s in r["results"].items():
        lines.append(
            f"| {mode} | {s['rest']['p50_ms']} ms | {s['mcp_sdk']['p50_ms']} ms | {s['mcp_sdk']['p50_vs_rest']}x | "
            f"{s['mcp_post']['p50_ms']} ms | {s['mcp_post']['p50_vs_rest']}x | {s['rest']['p95_ms']} ms | "
            f"{s['mcp_sdk']['p95_ms']} ms | {s['mcp_post']['p95_ms']} ms |"
        )
    lines += ["", f"Goal: MCP p50 <= 1.2x REST. Run {r['date']}, Python {r['python']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=0, help="SciFact abstracts to ingest (default: all)")
    parser.add_argument("--queries", type=int, default=300, help="queries per mode (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="queries not counted (default 20)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args()

    corpus = read_jsonl(DATASET / "corpus.jsonl")
    if args.docs:
        random.Random(args.seed).shuffle(corpus)
        corpus = corpus[: args.docs]
    queries = [q["text"] for q in read_jsonl(DATASET / "queries.jsonl")]
    random.Random(args.seed).shuffle(queries)
    queries = queries[: args.queries + args.warmup]

    data_dir = Path(tempfile.mkdtemp(prefix="ragsite-mcp-bench-"))
    database_url = fresh_database(args.database_url, "ragsite_mcp_bench")
    server = Server(database_url, data_dir, data_dir / "gunicorn.log")
    try:
        server.manage("migrate", "--no-input")
        server.manage("embedder_export")
        key = server.manage("create_api_key", "mcp-bench", "--scope", "write").strip()
        server.start()
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        print(f"ingest {len(corpus)} abstracts ...", flush=True)
        corpus_stats = preload(server.base, headers, corpus, threads=4)
        print(f"corpus: {corpus_stats}", flush=True)
        load_before = [round(x, 2) for x in os.getloadavg()]
        times, mismatches = asyncio.run(measure(server.base, key, queries, args.warmup))
        load_after = [round(x, 2) for x in os.getloadavg()]
    finally:
        server.stop()
        drop_database(database_url)
    result = {
        "corpus": corpus_stats,
        "queries": len(queries) - args.warmup,
        "warmup": args.warmup,
        "mismatches": mismatches,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "results": summarise(times),
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mcp.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "mcp.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
