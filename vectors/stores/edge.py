"""qdrant-edge engine: the Qdrant search engine in-process, on disk under ``QDRANT_PATH/edge``.

Layout: ``edge/<collection>/`` is the shard (segments, write-ahead log, edge_config.json) and
``edge/<collection>.json`` the sidecar recording the embedding model and dimension (a shard has
no collection metadata). The sidecar is written after the shard is complete, so a crash during
creation leaves a shard without a sidecar, which ensure_collection() adopts if it is empty.

Behaviour worth knowing (qdrant-edge-py 0.9, measured in bench/results/vectorstore.md):
- Every update goes to the write-ahead log before update() returns, so a killed process loses
  nothing; flush() writes segments and lets the log be truncated. We flush at most every
  FLUSH_INTERVAL seconds of writes and on close, which bounds log replay at the next start.
- New points land in an appendable segment scored by brute force (SIMD; ~13 ms a query at 100k
  points, ~1 ms when a source/document filter narrows the candidates through a payload index).
  HNSW is built by the shard's optimize(), which is CPU-heavy (minutes at 100k on two cores) and
  holds the GIL throughout, which would freeze every other thread of the process. So the store
  never calls it in-process: an *index build* copies the shard, optimizes the copy in a child
  process at a lower CPU priority (vectors/stores/edge_index.py) while this process keeps serving from
  the original, then swaps the indexed copy in under the store's lock (a reload, ~1 s at 100k
  points) and replays the writes that arrived meanwhile (kept in a journal).
- Builds start by themselves (``index_threshold``, QDRANT_EDGE_INDEX_THRESHOLD) once that many
  points lack the index and no write came for ``index_idle`` seconds, so a long ingest is not
  slowed by a build racing it; ``optimize()`` runs one and waits (``vectors_reindex --optimize``).
- A crash mid-swap is undone at the next open: while ``edge/.replaced/<collection>`` exists, the
  swap has not finished and that old shard (complete, thanks to its WAL) is put back; a copy left
  in ``edge/.indexing/`` is deleted.
- Calls into the engine hold the GIL too; the store's lock serialises them, which costs nothing
  extra and keeps close()/recreate() from racing a query.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    MatchAny,
    PayloadSchemaType,
    PayloadSelector,
    Point,
    Query,
    QueryRequest,
    ScrollRequest,
    UpdateOperation,
)

from vectors.stores.base import (
    INTEGER_INDEXES,
    KEYWORD_INDEXES,
    Conditions,
    OwnerLock,
    VectorHit,
    VectorStore,
    VectorStoreError,
    VectorStoreMismatch,
    VectorStoreUnavailable,
    mismatch_message,
    public_payload,
)

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 5.0  # seconds; the WAL already makes each update survive a crash
UPDATE_BATCH = 1000
DEFAULT_INDEX_THRESHOLD = 20_000  # points without HNSW before a background build starts
DEFAULT_INDEX_IDLE = 30.0  # seconds without writes before it starts
JOURNAL_MAX_POINTS = 200_000  # writes during one build beyond this: give the build up, start again later
QDRANT_INDEXING_THRESHOLD_KB = 10_000  # Qdrant's own default: segments above this get HNSW
BUILD_NICE = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def edge_filter(conditions: Conditions) -> Filter | None:
    if conditions.empty:
        return None
    must: list[Any] = []
    if conditions.source_ids is not None:
        must.append(FieldCondition("source_id", match=MatchAny(list(conditions.source_ids))))
    if conditions.document_ids is not None:
        must.append(FieldCondition("document_id", match=MatchAny(list(conditions.document_ids))))
    for group in conditions.term_groups:
        must.append(FieldCondition("metadata_terms", match=MatchAny(list(group))))
    return Filter(must=must)


# One search thread per query: a web server gets its parallelism from concurrent requests, and
# qdrant-edge's default (a pool sized to the cores, searching segments in parallel) cost ~0.6 ms
# more CPU per query at 100k points for no shorter wall time, CPU that hybrid search needs for
# the PostgreSQL backend running the keyword side at the same moment (bench/results/search_scale.md).
SEARCH_THREADS = 1


def _serving_config(dimension: int) -> EdgeConfig:
    # Unset fields keep what the shard has persisted (edge_config.json); this one is rewritten.
    return EdgeConfig(
        vectors=EdgeVectorParams(size=dimension, distance=Distance.Cosine), max_search_threads=SEARCH_THREADS
    )


class EdgeStore(VectorStore):
    engine = "edge"

    def __init__(
        self,
        *,
        collection: str,
        path: Path,
        index_threshold: int = 0,
        index_idle: float = DEFAULT_INDEX_IDLE,
    ) -> None:
        super().__init__(collection=collection)
        if not _NAME.match(collection) or collection in (".", ".."):
            raise VectorStoreError(
                f"QDRANT_COLLECTION {collection!r} is not a valid directory name for the edge engine"
            )
        self.root = path
        self.shard_dir = path / "edge" / collection
        self.sidecar = path / "edge" / f"{collection}.json"
        self._owner = OwnerLock(path, engine=self.engine)
        self._shard: EdgeShard | None = None
        self._meta: dict | None = None
        self._last_flush = time.monotonic()
        self.indexing_dir = path / "edge" / ".indexing" / collection
        self.replaced_dir = path / "edge" / ".replaced" / collection
        self.index_threshold = max(0, int(index_threshold))
        self.index_idle = max(0.0, float(index_idle))
        self._last_write = time.monotonic()
        self._dirty = True  # the unindexed count may have changed since the monitor last looked
        self._journal: list[tuple[Callable, Any]] | None = None  # writes during a build, replayed after the swap
        self._journal_points = 0
        self._build_thread: threading.Thread | None = None
        self._build_proc: subprocess.Popen | None = None
        self._build_dir: Path | None = None  # this build's copy, under indexing_dir
        self._build_cancelled = False
        self._build_done = threading.Condition(self._lock)
        self._index_state: dict[str, Any] = {"state": "idle"}
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        try:
            self._recover_swap()
            self._meta = self._read_sidecar()
            if (self.shard_dir / "edge_config.json").exists():
                self._shard = self._load_shard()
        except BaseException:
            self._owner.release()
            raise
        if self.index_threshold:
            self._monitor = threading.Thread(target=self._monitor_loop, name="edge-index-monitor", daemon=True)
            self._monitor.start()

    # engine plumbing --------------------------------------------------------------------------

    def _edge(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            if "WouldBlock" in str(exc):  # the shard's own WAL lock: opened without our owner lock
                raise VectorStoreUnavailable(
                    f"The local vector store at {self.root} is in use by another process. Stop it, or run a "
                    "Qdrant server and set QDRANT_URL so several processes can share it."
                ) from exc
            # The message reaches API error bodies: the shard's path stays in the log.
            logger.warning("qdrant-edge failed on %s: %s", self.shard_dir, exc)
            raise VectorStoreError(f"the embedded vector store (qdrant-edge) failed: {exc}") from exc

    def _read_sidecar(self) -> dict | None:
        try:
            data = json.loads(self.sidecar.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise VectorStoreError(f"unreadable vector store metadata {self.sidecar}: {exc}") from exc
        return data if isinstance(data, dict) else None

    def _write_sidecar(self, meta: dict) -> None:
        tmp = self.sidecar.with_suffix(".json.tmp")
        with open(tmp, "w") as fh:
            json.dump(meta, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.sidecar)  # atomic: readers see the old or the new file, never half
        self._meta = meta

    def _maybe_flush(self, *, force: bool = False) -> None:
        if self._shard is not None and (force or time.monotonic() - self._last_flush >= FLUSH_INTERVAL):
            self._edge(self._shard.flush)
            self._last_flush = time.monotonic()

    # collection -------------------------------------------------------------------------------

    def _load_shard(self):
        """Open the shard on disk with the serving settings (``_serving_config``) where its dimension is known."""
        dimension = (self._meta or {}).get("dimension")
        if isinstance(dimension, int) and dimension > 0:
            return self._edge(EdgeShard.load, str(self.shard_dir), _serving_config(dimension))
        return self._edge(EdgeShard.load, str(self.shard_dir))

    def _create(self, *, dimension: int, model_id: str) -> None:
        if self.shard_dir.exists():  # leftovers of a creation that never finished
            shutil.rmtree(self.shard_dir)
        self.shard_dir.mkdir(parents=True)
        self._shard = self._edge(EdgeShard.create, str(self.shard_dir), _serving_config(dimension))
        self._create_indexes()
        self._maybe_flush(force=True)
        self._write_sidecar({"model_id": model_id, "dimension": dimension, "created_at": time.time()})

    def _create_indexes(self) -> None:
        assert self._shard is not None
        have = set(self._edge(self._shard.info).payload_schema)
        for name in INTEGER_INDEXES:
            if name not in have:
                self._edge(self._shard.update, UpdateOperation.create_field_index(name, PayloadSchemaType.Integer))
        for name in KEYWORD_INDEXES:
            if name not in have:
                self._edge(self._shard.update, UpdateOperation.create_field_index(name, PayloadSchemaType.Keyword))

    def _ensure(self, *, dimension: int, model_id: str) -> None:
        if self._shard is None:
            self._create(dimension=dimension, model_id=model_id)
            return
        meta = self._meta
        if meta is None:
            if self._count() == 0:  # an interrupted creation: adopt the empty shard
                self._create_indexes()
                self._write_sidecar({"model_id": model_id, "dimension": dimension, "created_at": time.time()})
                return
            meta = {}
        if meta.get("dimension") != dimension or meta.get("model_id") != model_id:
            raise VectorStoreMismatch(
                mismatch_message(
                    where=f"at {self.shard_dir}",
                    have_dimension=meta.get("dimension"),
                    have_model=meta.get("model_id"),
                    dimension=dimension,
                    model_id=model_id,
                )
            )
        self._create_indexes()  # a shard made by an older version may lack one

    def _recreate(self, *, dimension: int, model_id: str) -> None:
        self._drop_shard()
        self._create(dimension=dimension, model_id=model_id)

    def _drop_shard(self) -> None:
        self._build_cancel("the collection was dropped")
        if self._shard is not None:
            with contextlib.suppress(Exception):
                self._shard.close()
            self._shard = None
        with contextlib.suppress(FileNotFoundError):
            self.sidecar.unlink()  # first, so a crash mid-way leaves no claim about the old model
        self._meta = None
        if self.shard_dir.exists():
            shutil.rmtree(self.shard_dir)

    def _stored_dimension(self) -> int | None:
        if self._shard is None or not self._meta:
            return None
        return int(self._meta["dimension"])

    # points -----------------------------------------------------------------------------------

    def _require_shard(self) -> EdgeShard:
        if self._shard is None:
            raise VectorStoreError("the edge shard does not exist yet; call ensure_collection()")
        return self._shard

    def _upsert(self, points: list[tuple[str, list[float], dict]]) -> None:
        shard = self._require_shard()
        self._wrote(self._upsert, points, len(points))
        for start in range(0, len(points), UPDATE_BATCH):
            batch = [Point(pid, vector, payload) for pid, vector, payload in points[start : start + UPDATE_BATCH]]
            self._edge(shard.update, UpdateOperation.upsert_points(batch))
        self._maybe_flush()

    def _delete_ids(self, ids: list[str]) -> None:
        if self._shard is None:
            return
        self._wrote(self._delete_ids, ids, len(ids))
        for start in range(0, len(ids), UPDATE_BATCH):
            self._edge(self._shard.update, UpdateOperation.delete_points(ids[start : start + UPDATE_BATCH]))
        self._maybe_flush()

    def _delete_where(self, conditions: Conditions) -> None:
        if self._shard is None:
            return
        self._wrote(self._delete_where, conditions, 1)
        self._edge(self._shard.update, UpdateOperation.delete_points_by_filter(edge_filter(conditions)))
        self._maybe_flush()

    def _search(
        self, vector: list[float], *, limit: int, conditions: Conditions, payload_fields: list[str] | None
    ) -> list[VectorHit]:
        if self._shard is None:
            return []
        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(vector),
            filter=edge_filter(conditions),
            with_payload=(
                True if payload_fields is None else PayloadSelector.Include(payload_fields) if payload_fields else False
            ),
            with_vector=False,
        )
        points = self._edge(self._shard.query, request)
        return [VectorHit(id=str(p.id), score=float(p.score), payload=public_payload(p.payload)) for p in points]

    def _count(self) -> int:
        if self._shard is None:
            return 0
        return int(self._edge(self._shard.count, CountRequest(exact=True)))

    def _scroll_ids(self, *, offset: Any, limit: int) -> tuple[list[str], Any]:
        if self._shard is None:
            return [], None
        request = ScrollRequest(offset=offset, limit=limit, with_payload=False, with_vector=False)
        records, next_offset = self._edge(self._shard.scroll, request)
        return [str(r.id) for r in records], next_offset

    def _health(self) -> dict:
        report: dict[str, Any] = {"path": str(self.shard_dir)}
        if self._shard is None:
            return {**report, "exists": False, "points": 0, "dimension": None, "model_id": None}
        info = self._edge(self._shard.info)
        meta = self._meta or {}
        return {
            **report,
            "exists": True,
            "points": self._count(),
            "dimension": meta.get("dimension"),
            "model_id": meta.get("model_id"),
            "segments": int(info.segments_count),
            "indexed_vectors": int(info.indexed_vectors_count),
            "index_build": dict(self._index_state),
        }

    def optimize(self, *, min_unindexed: int = 0) -> bool:
        """Build the HNSW index now, in a child process, and wait for it; True if the shard changed.

        Serving goes on meanwhile (see the module docstring). ``min_unindexed`` skips the build
        while fewer points than that lack the index.
        """
        with self._lock:
            self._check_open()
            if self._shard is None:
                return False
            if min_unindexed and self._unindexed() < min_unindexed:
                return False
            if self._build_thread is None:
                self._build_start(reason="requested")
            while self._build_thread is not None:
                self._build_done.wait()
            state = self._index_state
            if state.get("state") == "failed":
                raise VectorStoreError(f"the index build failed: {state.get('error')}")
            return bool(state.get("changed"))

    def index_build_start(self) -> bool:
        """Start a background index build now if none is running; True if one started."""
        with self._lock:
            self._check_open()
            if self._shard is None or self._build_thread is not None:
                return False
            self._build_start(reason="requested")
            return True

    def index_build_wait(self, timeout: float | None = None) -> dict:
        """Wait for a running build to end; returns the index state (state, seconds, points...)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._build_thread is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._build_done.wait(remaining)
            return dict(self._index_state)

    # background index builds --------------------------------------------------------------------

    def _wrote(self, write: Callable, payload: Any, points: int) -> None:
        """Every write passes here (under the lock): the idle clock, and the journal during a build."""
        self._last_write = time.monotonic()
        self._dirty = True
        if self._journal is not None:
            self._journal.append((write, payload))
            self._journal_points += points
            if self._journal_points > JOURNAL_MAX_POINTS:
                self._build_cancel(f"more than {JOURNAL_MAX_POINTS} points were written during the build")

    def _unindexed(self) -> int:
        info = self._edge(self._require_shard().info)
        return max(0, int(info.points_count) - int(info.indexed_vectors_count))

    def _monitor_loop(self) -> None:
        interval = min(5.0, max(0.05, self.index_idle / 2 or 0.05))
        while not self._stop.wait(interval):
            try:
                self._maybe_build()
            except Exception:  # a monitor that dies silently would never index again
                logger.exception("edge index monitor: check failed")

    def _maybe_build(self) -> None:
        with self._lock:
            if self._closed or self._shard is None or self._build_thread is not None or not self._dirty:
                return
            if time.monotonic() - self._last_write < self.index_idle:
                return
            self._dirty = False
            unindexed = self._unindexed()
            if unindexed >= self.index_threshold:
                self._build_start(reason=f"{unindexed} points without the index")

    def _indexing_threshold_kb(self) -> int:
        """Qdrant's per-segment threshold: ours in points, as KB of vectors, capped at Qdrant's default."""
        dimension = self._stored_dimension() or 1
        wanted = self.index_threshold or 1
        return max(1, min(QDRANT_INDEXING_THRESHOLD_KB, math.ceil(wanted * dimension * 4 / 1024)))

    def _build_start(self, *, reason: str) -> None:
        """Copy the shard and start the child (under the lock; the copy is ~0.5 s at 100k points)."""
        self._require_shard()
        started = time.monotonic()
        self._maybe_flush(force=True)
        # A folder of its own per build: a child orphaned by a killed parent may still be writing
        # into an older one (it also stops itself when its parent dies, see edge_index.py).
        shutil.rmtree(self.indexing_dir, ignore_errors=True)
        self.indexing_dir.mkdir(parents=True, exist_ok=True)
        self._build_dir = self.indexing_dir / f"{os.getpid()}-{time.monotonic_ns()}"
        shutil.copytree(self.shard_dir, self._build_dir)
        self._journal, self._journal_points = [], 0
        self._build_cancelled = False
        self._index_state = {
            "state": "running",
            "reason": reason,
            "started_at": time.time(),
            "copy_seconds": round(time.monotonic() - started, 3),
        }
        logger.info("edge index build started (%s)", reason)
        cmd = [
            sys.executable,
            str(Path(__file__).with_name("edge_index.py")),
            str(self._build_dir),
            "--indexing-threshold-kb",
            str(self._indexing_threshold_kb()),
            "--parent-pid",
            str(os.getpid()),
        ]
        # The waiting thread starts the child itself: the child asks Linux to kill it when its
        # parent goes (PR_SET_PDEATHSIG), which fires when the *thread* that forked it ends, and
        # this thread lives exactly as long as the build.
        self._build_thread = threading.Thread(
            target=self._build_wait, args=(cmd,), name="edge-index-build", daemon=True
        )
        self._build_thread.start()

    def _build_cancel(self, why: str) -> None:
        """Stop a running build (under the lock); its thread cleans up when the child has gone."""
        if self._build_thread is None or self._build_cancelled:
            return
        self._build_cancelled = True
        self._journal = None
        self._index_state = {**self._index_state, "state": "cancelled", "error": why}
        logger.info("edge index build cancelled: %s", why)
        if self._build_proc is not None and self._build_proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._build_proc.kill()

    def _build_wait(self, cmd: list[str]) -> None:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            proc, out, err = None, "", f"could not start the index build: {exc}"
        else:
            with contextlib.suppress(OSError):  # serving keeps the CPU first (not preexec_fn: unsafe with threads)
                os.setpriority(os.PRIO_PROCESS, proc.pid, BUILD_NICE)
            with self._lock:
                self._build_proc = proc
                if self._build_cancelled or self._closed:
                    proc.kill()
            out, err = proc.communicate()
        with self._lock:
            try:
                if self._build_cancelled or self._closed:
                    shutil.rmtree(self.indexing_dir, ignore_errors=True)
                    if self._index_state.get("state") == "running":
                        self._index_state = {**self._index_state, "state": "cancelled"}
                elif proc is None or proc.returncode != 0:
                    status = "not started" if proc is None else f"exit status {proc.returncode}"
                    message = (err or "").strip().splitlines()[-1:] or [status]
                    self._build_failed(message[0])
                else:
                    self._swap(json.loads(out.strip().splitlines()[-1]))
            except Exception as exc:
                logger.exception("edge index build: swap failed")
                self._build_failed(str(exc))
            finally:
                self._journal = None
                self._build_proc = None
                self._build_dir = None
                self._build_thread = None
                self._build_done.notify_all()

    def _build_failed(self, message: str) -> None:
        shutil.rmtree(self.indexing_dir, ignore_errors=True)
        self._index_state = {**self._index_state, "state": "failed", "error": message, "ended_at": time.time()}
        logger.warning("edge index build failed: %s", message)

    def _swap(self, report: dict) -> None:
        """Put the indexed copy in place of the live shard and replay the journal (under the lock)."""
        started = time.monotonic()
        journal = self._journal or []
        self._journal = None
        assert self._shard is not None
        self._maybe_flush(force=True)
        self._shard.close()
        self._shard = None
        shutil.rmtree(self.replaced_dir, ignore_errors=True)
        self.replaced_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.shard_dir, self.replaced_dir)  # from here until the rmtree below, a crash rolls back
        assert self._build_dir is not None
        os.replace(self._build_dir, self.shard_dir)
        try:
            self._shard = self._load_shard()
            for write, payload in journal:
                write(payload)
            self._maybe_flush(force=True)
        except Exception:
            if self._shard is not None:
                with contextlib.suppress(Exception):
                    self._shard.close()
                self._shard = None
            shutil.rmtree(self.shard_dir, ignore_errors=True)
            os.replace(self.replaced_dir, self.shard_dir)
            self._shard = self._load_shard()
            raise
        shutil.rmtree(self.replaced_dir, ignore_errors=True)
        self._index_state = {
            **self._index_state,
            **report,
            "state": "done",
            "replayed_writes": len(journal),
            "swap_seconds": round(time.monotonic() - started, 3),
            "ended_at": time.time(),
        }
        logger.info("edge index build done: %s", self._index_state)

    def _recover_swap(self) -> None:
        """Undo an index swap a crash interrupted; drop a half-built copy (see the module docstring)."""
        if self.replaced_dir.exists():
            logger.warning("edge store: restoring %s after an interrupted index swap", self.shard_dir)
            shutil.rmtree(self.shard_dir, ignore_errors=True)
            os.replace(self.replaced_dir, self.shard_dir)
        shutil.rmtree(self.indexing_dir, ignore_errors=True)

    def _close(self) -> None:
        self._stop.set()
        self._build_cancel("the store was closed")
        try:
            if self._shard is not None:
                try:
                    self._maybe_flush(force=True)
                finally:
                    self._shard.close()
                    self._shard = None
        finally:
            self._owner.release()
