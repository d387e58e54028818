"""The edge store's HNSW index builds: in a child process, beside serving, swapped in with the
writes that arrived meanwhile, undone after a crash mid-swap. Real qdrant-edge shards on temp dirs."""

from __future__ import annotations

import shutil
import time

import pytest

from vectors.stores import vector_store_open
from vectors.tests.stores.test_stores import MODEL, point, unit

DIM = 8


def open_store(path, **options):
    store = vector_store_open(collection="chunks", path=path, engine="edge", **options)
    store.ensure_collection(dimension=DIM, model_id=MODEL)
    return store


def wait_for(predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def top_ids(store, seeds, limit=5):
    return {s: [h.id for h in store.search(unit(s), limit=limit)] for s in seeds}


def test_a_build_starts_by_itself_once_enough_points_lack_the_index(tmp_path):
    store = open_store(tmp_path, index_threshold=100, index_idle=0.0)
    try:
        store.upsert([point(i, document_id=i) for i in range(60)])
        time.sleep(0.5)
        assert store.health()["index_build"]["state"] == "idle"  # 60 < 100: brute force is fine

        store.upsert([point(i, document_id=i) for i in range(60, 300)])
        state = wait_for(lambda: (s := store.health()["index_build"])["state"] == "done" and s)

        health = store.health()
        assert health["points"] == 300 and health["indexed_vectors"] == 300
        assert state["reason"].endswith("points without the index")
        after = top_ids(store, range(0, 300, 7))
        assert all(after[s][0] == point(s).id for s in after)  # each point is still its own nearest
    finally:
        store.close()


def test_no_build_starts_while_writes_keep_coming(tmp_path):
    store = open_store(tmp_path, index_threshold=10, index_idle=3600.0)
    try:
        store.upsert([point(i) for i in range(50)])
        time.sleep(0.5)
        assert store.health()["index_build"]["state"] == "idle"
    finally:
        store.close()


@pytest.fixture
def build_gate(tmp_path, monkeypatch):
    """Index-build children wait at their start until the test creates the returned file.

    The child is a real process; without the gate a fast machine could finish a 500-point build
    before the test looked, and "the build is still running" was a race the test could lose.
    """
    import stat
    import sys

    gate = tmp_path / "go"
    wrapper = tmp_path / "gated-python"
    wrapper.write_text(f'#!/bin/sh\nwhile [ ! -e "{gate}" ]; do sleep 0.02; done\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr("vectors.stores.edge.sys.executable", str(wrapper))
    return gate


def test_searches_are_served_while_the_child_builds(tmp_path, build_gate):
    store = open_store(tmp_path / "store")
    try:
        store.upsert([point(i, document_id=i) for i in range(500)])
        assert store.index_build_start() is True
        assert store.index_build_start() is False  # one at a time

        hits = store.search(unit(7), limit=3)

        assert hits[0].id == point(7).id
        assert store.health()["index_build"]["state"] == "running"  # the search did not wait for it
        build_gate.touch()
        assert store.index_build_wait(timeout=120)["state"] == "done"
    finally:
        build_gate.touch()
        store.close()


def test_writes_during_a_build_are_replayed_onto_the_indexed_copy(tmp_path):
    store = open_store(tmp_path)
    try:
        store.upsert([point(i, document_id=i % 50) for i in range(400)])
        store.index_build_start()
        # These reach the live shard while the child indexes its copy taken before them.
        store.upsert([point(i, document_id=999) for i in range(1000, 1020)])
        store.delete([point(i).id for i in range(0, 10)])
        store.delete_where(document_id=49)  # points 49, 99, ..., 399
        state = store.index_build_wait(timeout=120)

        assert state["state"] == "done" and state["replayed_writes"] == 3
        assert store.health()["indexed_vectors"] > 0
        assert store.count() == 400 + 20 - 10 - 8
        assert store.search(unit(1005), limit=1)[0].id == point(1005).id
        assert point(3).id not in {h.id for h in store.search(unit(3), limit=20)}
        assert store.search(unit(99), limit=5, document_ids=[49]) == []
    finally:
        store.close()
    reopened = open_store(tmp_path)  # and it all survives a restart
    try:
        assert reopened.count() == 402
        assert reopened.search(unit(1005), limit=1)[0].id == point(1005).id
    finally:
        reopened.close()


def test_optimize_waits_for_the_build_and_reports_it(tmp_path):
    store = open_store(tmp_path)
    try:
        store.upsert([point(i) for i in range(200)])
        assert store.optimize(min_unindexed=1000) is False  # below the threshold: nothing to do
        assert store.optimize() is True
        health = store.health()
        assert health["indexed_vectors"] == 200 and health["index_build"]["state"] == "done"
    finally:
        store.close()


def test_closing_during_a_build_stops_the_child_and_leaves_no_copy(tmp_path):
    store = open_store(tmp_path)
    store.upsert([point(i) for i in range(300)])
    store.index_build_start()
    child = wait_for(lambda: store._build_proc)
    store.close()

    assert child.wait(timeout=30) is not None
    reopened = open_store(tmp_path)
    try:
        assert reopened.count() == 300
        assert not reopened.indexing_dir.exists()
    finally:
        reopened.close()


def test_a_swap_interrupted_by_a_crash_is_rolled_back_at_the_next_open(tmp_path):
    store = open_store(tmp_path)
    store.upsert([point(i) for i in range(120)])
    shard_dir, replaced_dir, indexing_dir = store.shard_dir, store.replaced_dir, store.indexing_dir
    store.close()
    # The state a crash between the two renames (or before the replay was flushed) leaves behind:
    # the complete old shard under .replaced, and in its place an incomplete one.
    replaced_dir.parent.mkdir(parents=True)
    shutil.copytree(shard_dir, replaced_dir)
    other = open_store(tmp_path / "other")
    other.upsert([point(i) for i in range(5)])
    other.close()
    shutil.rmtree(shard_dir)
    shutil.copytree(other.shard_dir, shard_dir)
    indexing_dir.mkdir(parents=True)
    (indexing_dir / "half-built").write_text("x")

    store = open_store(tmp_path)
    try:
        assert store.count() == 120
        assert not replaced_dir.exists() and not indexing_dir.exists()
    finally:
        store.close()


def test_a_failed_build_is_reported_and_leaves_the_store_serving(tmp_path, monkeypatch):
    store = open_store(tmp_path)
    try:
        store.upsert([point(i) for i in range(50)])
        monkeypatch.setattr("vectors.stores.edge.sys.executable", "/bin/false")
        store.index_build_start()
        state = store.index_build_wait(timeout=30)

        assert state["state"] == "failed" and "exit status 1" in state["error"]
        assert store.count() == 50 and not store.indexing_dir.exists()
        assert store.search(unit(3), limit=1)[0].id == point(3).id
    finally:
        store.close()


@pytest.mark.django_db
def test_search_through_the_api_uses_the_background_index(api, settings, fresh_store, run_commit_hooks):
    from documents.models import Source
    from documents.services import document_ingest
    from vectors.stores import get_vector_store, vector_store_reset

    vector_store_reset()
    settings.QDRANT_EDGE_INDEX_THRESHOLD = 3
    settings.QDRANT_EDGE_INDEX_IDLE = 0
    store = get_vector_store()
    source = Source.objects.create(name="docs")
    texts = {
        "Tides": "The gravitational pull of the moon raises the oceans twice a day.",
        "Bread": "Yeast ferments the dough, producing gas that makes the loaf rise.",
        "Kettles": "Water boils at 100 degrees Celsius at sea level.",
        "Cars": "A motor vehicle with four wheels, an engine and seats for passengers.",
    }
    with run_commit_hooks():
        for title, text in texts.items():
            document_ingest(source=source, title=title, text=text, url=f"https://example.com/{title}")

    wait_for(lambda: store.health()["index_build"]["state"] == "done")
    assert store.health()["indexed_vectors"] == 4
    response = api.get("/api/search/", {"q": "automobile on the road", "mode": "semantic"})

    assert response.status_code == 200
    assert response.json()["results"][0]["title"] == "Cars"
    qdrant = api.get("/ready").json()["checks"]["qdrant"]
    assert qdrant["indexed_vectors"] == 4 and qdrant["index_build"]["state"] == "done"


def test_the_build_child_stops_when_its_parent_is_killed(tmp_path):
    """No orphaned index build burning CPU (or writing into a folder) after the server died."""
    import signal
    import subprocess
    import sys
    import textwrap

    from vectors.tests.stores.test_stores import ROOT

    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from vectors.tests.stores.test_stores import MODEL, point
        from vectors.stores import vector_store_open
        store = vector_store_open(collection="chunks", path={str(tmp_path)!r}, engine="edge")
        store.ensure_collection(dimension=8, model_id=MODEL)
        store.upsert([point(i) for i in range(3000)])
        store.index_build_start()
        while store._build_proc is None:
            time.sleep(0.01)
        print(store._build_proc.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    child_pid = int(parent.stdout.readline())
    time.sleep(0.5)  # let the child get past its start-up check
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)

    wait_for(lambda: _gone(child_pid), timeout=30)
    store = open_store(tmp_path)  # and the next open cleans up its copy
    try:
        assert store.count() == 3000 and not store.indexing_dir.exists()
    finally:
        store.close()


def _gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for init to reap it is gone too
            return fh.read().split(") ", 1)[1].startswith("Z")
    except (ProcessLookupError, FileNotFoundError):
        return True


def test_a_build_child_is_killed_by_the_kernel_when_its_parent_dies(tmp_path):
    """edge_index's PR_SET_PDEATHSIG, with a child that would otherwise live for a minute."""
    import signal
    import subprocess
    import sys
    import textwrap

    from vectors.tests.stores.test_stores import ROOT

    child = f"import os, sys, time; sys.path.insert(0, {str(ROOT)!r}); from vectors.stores.edge_index import _die_with_parent; _die_with_parent(os.getppid()); print('armed', flush=True); time.sleep(60)"
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {child!r}], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "armed"
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert not _gone(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)

    wait_for(lambda: _gone(child_pid), timeout=10)


def test_a_build_for_a_parent_that_is_already_gone_does_nothing(tmp_path):
    import subprocess
    import sys

    from vectors.tests.stores.test_stores import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / "vectors" / "stores" / "edge_index.py"), str(tmp_path), "--parent-pid", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3 and result.stdout == ""
