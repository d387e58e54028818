"""Stopping and dying, with real processes: `manage.py serve` and `manage.py db_worker` on embedded
defaults (no DATABASE_URL: the embedded PostgreSQL in a DATA_DIR of the module's own, the local
ONNX embedder, the embedded vector store).

A stop (Ctrl-C to the process group, SIGINT, SIGTERM) during embedding must end the command with
status 0, hand the running task back to the queue (nothing left RUNNING), stop the embedded
PostgreSQL the command started, and the next start must finish the work. A worker killed with
SIGKILL leaves its task RUNNING; the next worker to start runs it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

# Enough chunks for three sync batches (vectors.sync.SYNC_BATCH = 256): the stop lands after
# the first batch is stored and before the last one is.
DOCUMENT_CHUNKS_AT_LEAST = 600
WAIT = int(
    os.environ.get("SHUTDOWN_TEST_WAIT", 240)
)  # seconds; a generous bound for a loaded 2-core machine, not a timing assertion

STATE_SCRIPT = """
import json
from django.db.models import Count
from django_tasks_db.models import DBTaskResult
from documents.models import Chunk
print("STATE " + json.dumps({
    "chunks": {row["index_status"]: row["n"] for row in
               Chunk.objects.filter(document__source__name=SOURCE).values("index_status").annotate(n=Count("id"))},
    "tasks": {row["status"]: row["n"] for row in DBTaskResult.objects.values("status").annotate(n=Count("id"))},
    "syncs": list(DBTaskResult.objects.filter(task_path="vectors.tasks.vectors_sync_task")
                  .order_by("enqueued_at").values_list("status", flat=True)),
}))
"""


def _env(data_dir: Path) -> dict[str, str]:
    # Not the test session's environment: ragsite.test_settings puts its own defaults there
    # (no embedded worker, inline tasks), and DATABASE_URL would bypass the embedded server.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env.update(
        DJANGO_SETTINGS_MODULE="ragsite.settings",
        DATA_DIR=str(data_dir),
        EMBEDDING_MODEL_DIR=str(ROOT / "var" / "models"),
        EMBEDDING_BACKEND="local",
        TASKS_BACKEND="database",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        # Short chunks embed fast: many batches of real embedding work in little time.
        CHUNK_SIZE_TOKENS="32",
        CHUNK_OVERLAP_TOKENS="0",
    )
    return env


def _manage(data_dir: Path, *args: str, timeout: float = WAIT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:  # a failed test: end what it started
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _start(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = open(data_dir / f"{args[0]}-{time.monotonic_ns()}.log", "w+")  # closed in _finish
    # A session of its own, as a terminal gives a command its own process group: Ctrl-C is
    # os.killpg(SIGINT), which reaches the command and every process it started at once.
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=_env(data_dir) | (env or {}),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    process.log = log
    _started.append(process)
    return process


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        returncode = process.wait(WAIT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    process.log.seek(0)
    output = process.log.read()
    process.log.close()
    return returncode, output


def _postgres_processes(data_dir: Path) -> list[psutil.Process]:
    pgdata = str(data_dir / "postgres")
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and pgdata in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _stop_postgres(data_dir: Path) -> None:
    """Teardown only: stop a server a failed test left behind (the test started it)."""
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(psutil.Error):
            postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            postmaster.send_signal(signal.SIGINT)
            postmaster.wait(30)


def _state(data_dir: Path, source: str) -> dict:
    done = _manage(data_dir, "shell", "-c", f"SOURCE = {source!r}\n{STATE_SCRIPT}")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("STATE "))
    return json.loads(line.removeprefix("STATE "))


def _live_query(data_dir: Path, sql: str, params: list) -> list[tuple]:
    """Read the database of a running command through the embedded server's socket."""
    import psycopg

    with psycopg.connect(host=str(data_dir / "postgres"), user="postgres", dbname="ragsite", connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def _indexed_and_pending(data_dir: Path, source: str) -> tuple[int, int]:
    rows = _live_query(
        data_dir,
        """SELECT count(*) FILTER (WHERE c.index_status = 'indexed'), count(*) FILTER (WHERE c.index_status = 'pending')
           FROM documents_chunk c JOIN documents_document d ON d.id = c.document_id
           JOIN documents_source s ON s.id = d.source_id WHERE s.name = %s""",
        [source],
    )
    return rows[0]


def _wait_until_embedding(data_dir: Path, source: str, process: subprocess.Popen) -> None:
    """Until the first batch of the source's chunks is stored and others are still pending."""
    deadline = time.monotonic() + WAIT
    error = None
    while time.monotonic() < deadline:
        assert process.poll() is None, "the command exited before embedding"
        try:
            indexed, pending = _indexed_and_pending(data_dir, source)
        except Exception as exc:  # the server or the tables are not up yet
            indexed, pending, error = 0, 1, exc
        if indexed and pending:
            return
        assert pending, "everything was embedded before the stop could be sent; make the document larger"
        time.sleep(0.2)
    process.log.seek(0)
    raise AssertionError(f"embedding did not start ({error!r}):\n{process.log.read()[-3000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def data_dir():
    if not (ROOT / "var" / "models").exists():
        pytest.skip("the local embedding model is not exported (make setup)")
    # Not under pytest's tmp_path: run as root, the embedded server runs as a user of its own,
    # which must traverse every parent folder, and pytest keeps its base folder private (0700).
    path = Path(tempfile.mkdtemp(prefix="ragsite-shutdown-"))
    done = _manage(path, "migrate", "--noinput")
    assert done.returncode == 0, done.stderr
    yield path
    leftovers = _postgres_processes(path)
    _stop_postgres(path)
    if not os.environ.get("SHUTDOWN_TEST_KEEP"):
        shutil.rmtree(path, ignore_errors=True)
    assert not leftovers


def _ingest_pending(data_dir: Path, source: str) -> None:
    # Text of its own per test: the embedding cache would otherwise hold every vector from the
    # test before, and a sync of cache hits can finish before the stop signal arrives.
    document = data_dir / f"document-{source}.txt"
    document.write_text(
        "\n\n".join(
            f"Cell {i % 97} signalling in tissue {i % 13} changes how protein {i % 31} responds to "
            f"treatment {i} in the {source} study."
            for i in range(4 * DOCUMENT_CHUNKS_AT_LEAST + 200)  # about four per chunk
        )
    )
    done = _manage(data_dir, "ingest", "--no-embed", "--source", source, str(document))
    assert done.returncode == 0, done.stderr
    state = _state(data_dir, source)
    assert state["chunks"].get("pending", 0) >= DOCUMENT_CHUNKS_AT_LEAST - 10, state


def _assert_stopped_cleanly(data_dir: Path, returncode: int, output: str, source: str) -> dict:
    assert returncode == 0, output[-3000:]
    assert "terminate called" not in output
    assert not _postgres_processes(data_dir), "the embedded PostgreSQL outlived the command"
    state = _state(data_dir, source)
    assert "RUNNING" not in state["tasks"], state
    assert state["syncs"][-1] == "READY", state  # the interrupted sync is back in the queue
    assert state["chunks"].get("indexed", 0) > 0 and state["chunks"].get("pending", 0) > 0, state
    return state


def _assert_all_indexed(data_dir: Path, source: str) -> None:
    assert not _postgres_processes(data_dir)
    state = _state(data_dir, source)
    assert set(state["chunks"]) == {"indexed"}, state
    assert "RUNNING" not in state["tasks"] and "READY" not in state["tasks"], state


def _wait_all_indexed(data_dir: Path, source: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert process.poll() is None
        try:
            _, pending = _indexed_and_pending(data_dir, source)
        except Exception:  # not up yet
            pending = 1
        if not pending:
            return
        time.sleep(0.5)
    raise AssertionError("the work was not finished")


def test_ctrl_c_during_embedding_stops_serve_and_its_postgres_and_the_next_start_finishes(data_dir):
    _ingest_pending(data_dir, "ctrl-c")
    serve = _start(data_dir, "serve", "--port", str(_free_port()))
    _wait_until_embedding(data_dir, "ctrl-c", serve)
    os.killpg(serve.pid, signal.SIGINT)
    _assert_stopped_cleanly(data_dir, *_finish(serve), "ctrl-c")

    again = _start(data_dir, "serve", "--port", str(_free_port()))
    _wait_all_indexed(data_dir, "ctrl-c", again)
    again.send_signal(signal.SIGINT)  # an idle server, the signal sent to the command alone
    returncode, output = _finish(again)
    assert returncode == 0, output[-3000:]
    _assert_all_indexed(data_dir, "ctrl-c")


def test_sigterm_during_embedding_stops_serve_cleanly_and_a_worker_finishes_the_work(data_dir):
    _ingest_pending(data_dir, "sigterm")
    serve = _start(data_dir, "serve", "--port", str(_free_port()))
    _wait_until_embedding(data_dir, "sigterm", serve)
    serve.send_signal(signal.SIGTERM)
    _assert_stopped_cleanly(data_dir, *_finish(serve), "sigterm")

    done = _manage(data_dir, "db_worker", "--batch", "--no-startup-delay", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    _assert_all_indexed(data_dir, "sigterm")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_db_worker_stops_on_signal_during_embedding_and_the_next_start_finishes(data_dir, signum):
    source = f"worker-{signal.Signals(signum).name.lower()}"
    _ingest_pending(data_dir, source)
    worker = _start(data_dir, "db_worker", "--no-startup-delay", "--interval", "0.2")
    _wait_until_embedding(data_dir, source, worker)
    worker.send_signal(signum)
    _assert_stopped_cleanly(data_dir, *_finish(worker), source)

    done = _manage(data_dir, "db_worker", "--batch", "--no-startup-delay", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    _assert_all_indexed(data_dir, source)


def test_task_of_a_killed_worker_runs_again_at_the_next_worker_start(data_dir):
    _ingest_pending(data_dir, "killed")
    worker = _start(data_dir, "db_worker", "--no-startup-delay", "--interval", "0.2")
    _wait_until_embedding(data_dir, "killed", worker)
    worker.send_signal(signal.SIGKILL)
    returncode, _ = _finish(worker)
    assert returncode == -signal.SIGKILL
    # Nobody was left to stop the server: the task row still says RUNNING.
    running = _live_query(
        data_dir,
        "SELECT count(*) FROM django_tasks_database_dbtaskresult WHERE status = 'RUNNING' AND task_path = %s",
        ["vectors.tasks.vectors_sync_task"],
    )
    assert running == [(1,)]

    done = _manage(data_dir, "db_worker", "--batch", "--no-startup-delay", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    assert "re-queued 1 task(s) left running by a worker that died" in done.stdout + done.stderr
    # The last command using the leftover server stopped it.
    _assert_all_indexed(data_dir, "killed")


def test_serve_listens_on_the_port_setting_and_a_second_serve_on_the_same_data_folder_is_refused(data_dir):
    """`make run` with PORT in `.env` (no --port), then `make run` again in a second terminal.

    The second used to start anyway, log a traceback and answer every semantic search with 503
    (the embedded vector store opens in one process only); now it stops at once and says why.
    """
    port = _free_port()
    first = _start(data_dir, "serve", env={"PORT": str(port)})
    deadline = time.monotonic() + WAIT
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            assert first.poll() is None and time.monotonic() < deadline, "serve did not answer on the PORT setting"
            time.sleep(0.5)

    second = _manage(data_dir, "serve", "--port", str(_free_port()), timeout=120)

    assert second.returncode != 0
    assert "already running on the data folder" in second.stderr and str(first.pid) in second.stderr
    assert "Traceback" not in second.stderr
    os.killpg(first.pid, signal.SIGINT)
    returncode, output = _finish(first)
    assert returncode == 0, output
    assert f"ragsite at http://127.0.0.1:{port}/" in output
    assert f"data in {data_dir}" in output
