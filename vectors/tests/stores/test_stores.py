"""The vector store against the real engines: qdrant-edge and qdrant-client local mode on temp
dirs, real second processes for the single-owner rule, real sockets for an unreachable server."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.test import override_settings

from vectors.stores import (
    VectorPoint,
    VectorStoreError,
    VectorStoreMismatch,
    VectorStoreUnavailable,
    get_vector_store,
    vector_store_open,
    vector_store_reset,
)
from vectors.stores.base import metadata_terms

ROOT = Path(__file__).resolve().parents[3]
DIM = 8
MODEL = "test-model"
ENGINES = ["edge", "client"]


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def point(seed: int, *, document_id: int = 1, source_id: int = 1, metadata: dict | None = None) -> VectorPoint:
    return VectorPoint(
        id=str(uuid.UUID(int=seed + 1)),
        vector=unit(seed),
        payload={
            "document_id": document_id,
            "source_id": source_id,
            "source": f"source-{source_id}",
            "title": f"Document {document_id}",
            "url": f"https://example.com/{document_id}",
            "ordinal": seed,
            "metadata": metadata or {},
        },
    )


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture
def store(engine, tmp_path):
    s = vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    s.ensure_collection(dimension=DIM, model_id=MODEL)
    yield s
    s.close()


def ids(hits) -> set[str]:
    return {h.id for h in hits}


# --- points and search -----------------------------------------------------------------------------


def test_upserted_point_is_found_with_its_payload(store):
    p = point(7, document_id=3, source_id=2, metadata={"page": 4, "lang": "en"})
    store.upsert([p, point(8), point(9)])

    hits = store.search(unit(7), limit=3)

    assert hits[0].id == p.id
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].payload == p.payload  # exactly what was stored: no internal keys leak out
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_can_return_only_some_payload_fields(store):
    p = point(7, document_id=3, source_id=2, metadata={"page": 4})
    store.upsert([p, point(8)])

    hits = store.search(unit(7), limit=2, payload_fields=["document_id"])

    assert hits[0].id == p.id and hits[0].payload == {"document_id": 3}
    assert store.search(unit(7), limit=1, payload_fields=[])[0].payload == {}


def test_upsert_of_an_existing_id_replaces_the_point(store):
    store.upsert([point(1, document_id=1)])
    store.upsert([VectorPoint(id=point(1).id, vector=unit(50), payload={"document_id": 99, "source_id": 1})])

    assert store.count() == 1
    [hit] = store.search(unit(50), limit=1)
    assert hit.payload["document_id"] == 99


def test_search_filters_by_source_and_document(store):
    store.upsert([point(i, document_id=i // 3, source_id=i % 2) for i in range(12)])

    by_source = store.search(unit(0), limit=20, source_ids=[1])
    by_document = store.search(unit(0), limit=20, document_ids=[0, 2])
    both = store.search(unit(0), limit=20, source_ids=[0], document_ids=[2])

    assert {h.payload["source_id"] for h in by_source} == {1} and len(by_source) == 6
    assert {h.payload["document_id"] for h in by_document} == {0, 2} and len(by_document) == 6
    assert {(h.payload["source_id"], h.payload["document_id"]) for h in both} == {(0, 2)}


def test_search_filters_by_metadata_given_as_strings(store):
    store.upsert(
        [
            point(1, metadata={"page": 3, "lang": "en", "draft": False}),
            point(2, metadata={"page": 4, "lang": "en", "draft": True}),
            point(3, metadata={"page": 3.0, "lang": "de", "tags": ["a", "b"]}),
            point(4, metadata={"author": {"name": "Ada"}}),
            point(5),
        ]
    )
    a, b, c, d = (point(i).id for i in (1, 2, 3, 4))

    assert ids(store.search(unit(0), limit=10, metadata={"page": "3"})) == {a, c}
    assert ids(store.search(unit(0), limit=10, metadata={"page": "3", "lang": "en"})) == {a}
    assert ids(store.search(unit(0), limit=10, metadata={"draft": "true"})) == {b}
    assert ids(store.search(unit(0), limit=10, metadata={"tags": "b"})) == {c}
    assert ids(store.search(unit(0), limit=10, metadata={"author.name": "Ada"})) == {d}
    assert ids(store.search(unit(0), limit=10, metadata={"lang": ["de", "fr"]})) == {c}
    assert store.search(unit(0), limit=10, metadata={"lang": "EN"}) == []


def test_empty_id_filters_match_nothing(store):
    store.upsert([point(1)])

    assert store.search(unit(1), limit=5, source_ids=[]) == []
    assert store.search(unit(1), limit=5, document_ids=[]) == []
    assert len(store.search(unit(1), limit=5, source_ids=None)) == 1


def test_delete_removes_only_the_given_points(store):
    store.upsert([point(i) for i in range(5)])

    store.delete([point(0).id, point(1).id, str(uuid.uuid4())])  # an unknown id is not an error

    assert store.count() == 3
    assert set(next(iter(store.iter_ids(10)))) == {point(i).id for i in (2, 3, 4)}


def test_delete_where_removes_a_documents_or_a_sources_points(store):
    store.upsert([point(i, document_id=i // 4, source_id=1 + (i >= 8)) for i in range(12)])

    store.delete_where(document_id=0)
    assert store.count() == 8
    assert all(h.payload["document_id"] != 0 for h in store.search(unit(0), limit=20))

    store.delete_where(source_id=2)
    assert store.count() == 4
    assert {h.payload["document_id"] for h in store.search(unit(0), limit=20)} == {1}


def test_delete_where_without_a_condition_is_refused(store):
    with pytest.raises(ValueError):
        store.delete_where()


def test_iter_ids_pages_through_every_point(store):
    store.upsert([point(i) for i in range(25)])

    pages = list(store.iter_ids(batch_size=10))

    assert [len(p) for p in pages] == [10, 10, 5]
    assert {i for page in pages for i in page} == {point(i).id for i in range(25)}
    assert store.count() == 25


def test_bad_vectors_are_refused(store):
    with pytest.raises(VectorStoreMismatch, match="vectors_reindex --recreate"):
        store.upsert([VectorPoint(id=str(uuid.uuid4()), vector=np.ones(DIM + 1), payload={})])
    with pytest.raises(ValueError):
        store.upsert([VectorPoint(id=str(uuid.uuid4()), vector=np.zeros(DIM), payload={})])
    with pytest.raises(ValueError):
        store.upsert([VectorPoint(id="chunk-1", vector=unit(1), payload={})])
    with pytest.raises(VectorStoreMismatch):
        store.search(np.ones(DIM * 2), limit=1)
    assert store.count() == 0


def test_health_reports_engine_points_and_model(store, engine):
    store.upsert([point(1), point(2)])

    health = store.health()

    assert health["engine"] == engine
    assert (health["points"], health["dimension"], health["model_id"]) == (2, DIM, MODEL)


# --- collection lifecycle ------------------------------------------------------------------------------


def test_a_new_store_has_no_points_and_searches_return_nothing(engine, tmp_path):
    s = vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    try:
        assert s.count() == 0
        assert s.search(unit(1), limit=5) == []
        assert list(s.iter_ids()) == []
        assert s.health()["exists"] is False
        s.delete([point(1).id])
        with pytest.raises(VectorStoreError, match="ensure_collection"):
            s.upsert([point(1)])
    finally:
        s.close()


def test_points_and_model_survive_reopening(engine, tmp_path):
    s = vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    s.ensure_collection(dimension=DIM, model_id=MODEL)
    s.upsert([point(i) for i in range(3)])
    s.close()

    s = vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    try:
        assert s.count() == 3
        assert s.search(unit(1), limit=1)[0].id == point(1).id  # searchable before ensure_collection
        s.ensure_collection(dimension=DIM, model_id=MODEL)
        assert s.health()["model_id"] == MODEL
    finally:
        s.close()


@pytest.mark.parametrize(("dimension", "model_id"), [(DIM * 2, MODEL), (DIM, "another-model")])
def test_ensure_collection_refuses_another_model_or_dimension(engine, tmp_path, dimension, model_id):
    s = vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    s.ensure_collection(dimension=DIM, model_id=MODEL)
    s.close()

    s = vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    try:
        with pytest.raises(VectorStoreMismatch, match=r"manage\.py vectors_reindex --recreate") as caught:
            s.ensure_collection(dimension=dimension, model_id=model_id)
        assert MODEL in str(caught.value) and str(DIM) in str(caught.value)
    finally:
        s.close()


def test_recreate_drops_the_points_and_records_the_new_model(store):
    store.upsert([point(i) for i in range(4)])

    store.recreate(dimension=DIM * 2, model_id="bigger-model")

    assert store.count() == 0
    assert (store.health()["dimension"], store.health()["model_id"]) == (DIM * 2, "bigger-model")
    store.ensure_collection(dimension=DIM * 2, model_id="bigger-model")
    store.upsert([VectorPoint(id=point(1).id, vector=unit(1, DIM * 2), payload={"document_id": 1})])
    assert store.search(unit(1, DIM * 2), limit=1)[0].id == point(1).id
    with pytest.raises(VectorStoreMismatch):
        store.ensure_collection(dimension=DIM, model_id=MODEL)


def test_threads_can_write_and_search_at_once(store):
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(offset, offset + 40, 4):
                store.upsert([point(j, document_id=j) for j in range(i, i + 4)])
                store.search(unit(i), limit=5, source_ids=[1])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n * 100,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert store.count() == 160


def test_optimize_keeps_every_point_searchable(store):
    store.upsert([point(i, document_id=i) for i in range(30)])

    assert store.optimize(min_unindexed=1000) is False  # below the threshold: nothing to do
    store.optimize()

    assert store.count() == 30
    assert store.search(unit(5), limit=1, document_ids=[5])[0].id == point(5).id


def nested(depth: int, leaf=1) -> dict:
    value: object = leaf
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[return-value]


def test_a_deeply_nested_payload_never_makes_the_store_unreadable(engine, tmp_path):
    # qdrant-edge stored a 130-level payload in its write-ahead log and then failed every search
    # and, after a restart, every open with "recursion limit exceeded".
    s = vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    s.ensure_collection(dimension=DIM, model_id=MODEL)
    s.upsert([point(1, metadata={"lang": "en"})])
    s.upsert(
        [point(2, document_id=2, metadata={"deep": nested(130), "lang": "de", "bad": "\ud800", "x": float("nan")})]
    )

    hits = s.search(unit(2), limit=2)
    assert ids(hits) == {point(1).id, point(2).id}
    deep = next(h for h in hits if h.id == point(2).id).payload["metadata"]
    assert deep["lang"] == "de" and deep["bad"] == "?" and "x" not in deep
    assert ids(s.search(unit(2), limit=5, metadata={"lang": "de"})) == {point(2).id}
    s.upsert([point(3)])
    s.delete([point(1).id])
    s.close()

    reopened = vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    reopened.ensure_collection(dimension=DIM, model_id=MODEL)
    assert ids(reopened.search(unit(2), limit=5)) == {point(2).id, point(3).id}
    reopened.close()


def test_payloads_are_bounded_in_size_but_plain_ones_are_kept_as_they_are():
    from vectors.stores import PAYLOAD_MAX_NODES, PAYLOAD_MAX_STRING, bounded_payload

    plain = point(1, metadata={"page": 4, "tags": ["a", "b"], "nested": {"x": {"y": 1.5}}}).payload
    assert bounded_payload(plain) == plain
    huge = bounded_payload({"metadata": {str(i): "v" * (PAYLOAD_MAX_STRING * 2) for i in range(PAYLOAD_MAX_NODES * 2)}})
    assert len(huge["metadata"]) < PAYLOAD_MAX_NODES
    assert {len(v) for v in huge["metadata"].values()} == {PAYLOAD_MAX_STRING}


def test_store_errors_do_not_name_file_paths(tmp_path):
    s = vector_store_open(collection="chunks", path=tmp_path, engine="edge")
    s.ensure_collection(dimension=DIM, model_id=MODEL)
    try:
        with pytest.raises(VectorStoreError) as caught:
            s._edge(lambda: (_ for _ in ()).throw(RuntimeError("Service runtime error: broken")))
        assert str(tmp_path) not in str(caught.value) and "broken" in str(caught.value)
    finally:
        s.close()


def test_metadata_terms_flatten_values_to_strings():
    terms = metadata_terms({"page": 3, "ok": True, "ratio": 0.5, "n": 2.0, "tags": ["x", 1], "a": {"b": "c"}, "x=y": 1})

    assert sorted(terms) == sorted(["page=3", "ok=true", "ratio=0.5", "n=2", "tags=x", "tags=1", "a.b=c"])
    assert metadata_terms(None) == [] and metadata_terms({"big": "x" * 1000}) == []


# --- single owner -----------------------------------------------------------------------------------------


def _child(code: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_second_process_gets_a_clear_error_while_the_first_owns_the_store(engine, tmp_path):
    child = _child(
        f"""
        import sys
        from vectors.stores import vector_store_open
        s = vector_store_open(collection="chunks", path={str(tmp_path)!r}, engine={engine!r})
        s.ensure_collection(dimension={DIM}, model_id={MODEL!r})
        print("ready", flush=True)
        sys.stdin.read()  # hold the store until the test closes our stdin
        s.close()
        """
    )
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()

        with pytest.raises(VectorStoreUnavailable) as caught:
            vector_store_open(collection="chunks", path=tmp_path, engine=engine)

        message = str(caught.value)
        assert f"pid {child.pid}" in message
        assert "QDRANT_URL" in message and str(tmp_path) in message
    finally:
        child.stdin.close()
        child.wait(timeout=30)

    s = vector_store_open(collection="chunks", path=tmp_path, engine=engine)  # released on exit
    s.close()


def test_a_killed_owner_loses_no_points_and_leaves_no_lock(engine, tmp_path):
    child = _child(
        f"""
        import os, signal, uuid
        import numpy as np
        from vectors.stores import VectorPoint, vector_store_open
        s = vector_store_open(collection="chunks", path={str(tmp_path)!r}, engine={engine!r})
        s.ensure_collection(dimension={DIM}, model_id={MODEL!r})
        rng = np.random.default_rng(0)
        s.upsert([VectorPoint(id=str(uuid.UUID(int=i + 1)), vector=rng.standard_normal({DIM}), payload={{"document_id": i}})
                  for i in range(50)])
        os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close
        """
    )
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL

    s = vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    try:
        s.ensure_collection(dimension=DIM, model_id=MODEL)
        assert s.count() == 50
    finally:
        s.close()


def test_the_same_store_cannot_be_opened_twice_in_one_process(engine, tmp_path):
    s = vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    try:
        with pytest.raises(VectorStoreUnavailable, match=f"pid {os.getpid()}"):
            vector_store_open(collection="chunks", path=tmp_path, engine=engine)
    finally:
        s.close()


# --- settings -----------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_store():
    vector_store_reset()
    yield
    vector_store_reset()


@pytest.mark.parametrize("engine_setting", ENGINES)
def test_get_vector_store_opens_the_configured_embedded_engine_once(fresh_store, tmp_path, engine_setting):
    with override_settings(QDRANT_URL="", QDRANT_PATH=tmp_path, QDRANT_LOCAL_ENGINE=engine_setting):
        store = get_vector_store()
        assert store is get_vector_store()
        assert store.engine == engine_setting
        assert store.health()["engine"] == engine_setting
    assert store.closed  # leaving the override reset the process-wide store


def test_get_vector_store_rejects_an_unknown_engine(fresh_store, tmp_path):
    with override_settings(QDRANT_URL="", QDRANT_PATH=tmp_path, QDRANT_LOCAL_ENGINE="faiss"):
        with pytest.raises(VectorStoreError, match="QDRANT_LOCAL_ENGINE"):
            get_vector_store()


# --- server -----------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_server_is_reported_as_unavailable(fresh_store):
    url = f"http://127.0.0.1:{_closed_port()}"
    with override_settings(QDRANT_URL=url, QDRANT_TIMEOUT=1):
        store = get_vector_store()
        assert store.engine == "server"
        for call in (
            lambda: store.ensure_collection(dimension=DIM, model_id=MODEL),
            lambda: store.search(unit(1), limit=3),
            store.count,
            lambda: store.delete([point(1).id]),
            lambda: list(store.iter_ids()),
            store.health,
        ):
            with pytest.raises(VectorStoreUnavailable, match="QDRANT_URL") as caught:
                call()
            assert url in str(caught.value)


def test_a_server_that_never_answers_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections, never replies
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        store = vector_store_open(collection="chunks", url=url, timeout=1)
        try:
            with pytest.raises(VectorStoreUnavailable, match="QDRANT_TIMEOUT=1s"):
                store.health()
        finally:
            store.close()


@pytest.fixture
def status_server():
    """A real HTTP server answering every request with one status code."""
    state = {"status": 503}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": {"error": "nope"}, "time": 0}')

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_server_errors_are_unavailable_and_auth_errors_name_the_api_key(status_server):
    state, url = status_server
    store = vector_store_open(collection="chunks", url=url, timeout=2)
    try:
        with pytest.raises(VectorStoreUnavailable, match="HTTP 503"):
            store.ensure_collection(dimension=DIM, model_id=MODEL)
        state["status"] = 401
        with pytest.raises(VectorStoreError, match="QDRANT_API_KEY") as caught:
            store.ensure_collection(dimension=DIM, model_id=MODEL)
        assert not isinstance(caught.value, VectorStoreUnavailable)
    finally:
        store.close()


def test_the_edge_store_searches_with_one_thread_per_query_old_shards_included(tmp_path):
    import json

    s = vector_store_open(collection="chunks", path=tmp_path, engine="edge")
    s.ensure_collection(dimension=DIM, model_id=MODEL)
    s.upsert([point(i) for i in range(3)])
    s.close()
    config = tmp_path / "edge" / "chunks" / "edge_config.json"
    assert json.loads(config.read_text())["max_search_threads"] == 1
    # A shard created before the setting existed (qdrant-edge's default pool) is switched on open.
    config.write_text(
        json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "max_search_threads"})
    )
    s = vector_store_open(collection="chunks", path=tmp_path, engine="edge")
    try:
        assert s.count() == 3 and s.search(unit(2), limit=1)[0].id == point(2).id
    finally:
        s.close()
    assert json.loads(config.read_text())["max_search_threads"] == 1
