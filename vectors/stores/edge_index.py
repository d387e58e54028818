"""Build the HNSW index of a *copy* of an edge shard, in a child process.

    python vectors/stores/edge_index.py SHARD_COPY_DIR [--indexing-threshold-kb N]

qdrant-edge's ``optimize()`` holds the GIL for its whole run (minutes at 100k points on two cores),
which would freeze every thread of the serving process. So ``EdgeStore`` copies its shard, runs
this script on the copy at a lower CPU priority, keeps serving from the original meanwhile, and
swaps the indexed copy in afterwards (replaying the writes it received during the build). The
script imports nothing but qdrant-edge, so it starts in a fraction of a second and its memory is
the index build's alone. It prints one JSON line with what it did; exit status 0 means the copy is
optimized and flushed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def build(path: str, *, indexing_threshold_kb: int | None = None) -> dict:
    from qdrant_edge import Distance, EdgeConfig, EdgeOptimizersConfig, EdgeShard, EdgeVectorParams

    started = time.monotonic()
    config = None
    if indexing_threshold_kb:
        # Segments larger than this get an HNSW index (Qdrant's default is 10 MB, ~6,500 vectors of
        # 384 dims). Written into the copy's config, so it travels with the swapped-in shard. A
        # config must name the vectors too: they are taken from the shard's own config file.
        with open(Path(path) / "edge_config.json") as fh:
            persisted = json.load(fh)
        vectors = {
            name: EdgeVectorParams(size=int(params["size"]), distance=getattr(Distance, params["distance"]))
            for name, params in persisted["vectors"].items()
        }
        config = EdgeConfig(
            vectors=vectors[""] if list(vectors) == [""] else vectors,
            optimizers=EdgeOptimizersConfig(indexing_threshold=int(indexing_threshold_kb)),
        )
    shard = EdgeShard.load(path, config) if config is not None else EdgeShard.load(path)
    try:
        before = shard.info()
        changed = bool(shard.optimize())
        shard.flush()
        after = shard.info()
    finally:
        shard.close()
    return {
        "changed": changed,
        "points": int(after.points_count),
        "indexed_vectors_before": int(before.indexed_vectors_count),
        "indexed_vectors": int(after.indexed_vectors_count),
        "segments": int(after.segments_count),
        "seconds": round(time.monotonic() - started, 3),
    }


def _die_with_parent(parent_pid: int) -> None:
    """A build for a process that is gone is wasted CPU: have Linux kill us when the parent dies."""
    import ctypes
    import os
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: the parent's close() still kills us
        pass
    if os.getppid() != parent_pid:  # it died before the prctl took effect
        sys.exit(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--indexing-threshold-kb", type=int, default=None)
    parser.add_argument("--parent-pid", type=int, default=None, help="stop if this process goes away")
    args = parser.parse_args(argv)
    if args.parent_pid:
        _die_with_parent(args.parent_pid)
    try:
        report = build(args.path, indexing_threshold_kb=args.indexing_threshold_kb)
    except Exception as exc:  # the parent reads the message from stderr
        print(f"index build failed on {args.path}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
