"""The README's first steps, run as written, on a fresh copy of the project with `.env` from `.env.example`.

A newcomer clones, runs `cp .env.example .env` (or not) and `make run`, creates the first admin
user with the README's line, makes an API key, and pastes the README's curl commands. This test
does exactly that in a copy of the checkout (the installed `.venv` and exported model linked in,
so `make` has nothing to install), on the embedded defaults (no DATABASE_URL): the commands are
taken from the README's "First steps" section, so a README that drifts from the code fails here.
Only the port differs (a free one instead of 8000) and the README's `...` placeholders get values.

It also checks what the newcomer cannot see but depends on: the task worker runs (the pasted
document becomes findable by semantic search, which needs its embeddings) and Ctrl-C stops all
that `make run` started, the embedded PostgreSQL included.
"""

# ruff: noqa: S310, S602 - runs the README's shell lines, as written, against a local server

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

WAIT = 300  # seconds: a generous bound on a loaded 2-core machine, not a timing assertion


def first_steps() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## First steps\n(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## First steps' section"
    return match.group(1)


def inline_commands(section: str) -> list[str]:
    """The inline `code` spans that are commands (they start with .venv/bin/python or a VAR=)."""
    spans = re.findall(r"`([^`\n]+)`", section)
    return [s for s in spans if s.startswith(".venv/bin/python manage.py") or re.match(r"[A-Z_]+=\S", s)]


def shell_block(section: str) -> str:
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "the first steps have no sh block"
    return match.group(1)


def json_values(text: str) -> list:
    """The JSON values printed one after another (curl adds no newline after a compact body)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_checkout(target: Path) -> None:
    """The tracked files as they are in the working tree, dated before the linked `.venv` was set up.

    The venv is this checkout's, installed from these requirements: make must see nothing to redo
    even where a requirements file was touched after the install (a merge, a checkout).
    """
    installed = ROOT / ".venv" / ".installed"
    before = installed.stat().st_mtime - 60 if installed.exists() else None
    listed = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
        if before is not None:
            os.utime(target / name, (before, before))
    (target / ".venv").symlink_to(ROOT / ".venv")
    (target / "var").mkdir()
    (target / "var" / "models").symlink_to(ROOT / "var" / "models")


def _newcomer_env(port: int) -> dict[str, str]:
    # A login shell's environment: none of the test session's settings (DATABASE_URL, DATA_DIR,
    # DJANGO_SETTINGS_MODULE), so the copy runs on its embedded defaults and its own .env.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env["PORT"] = str(port)
    return env


def _get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"{}")
        except ValueError:
            return exc.code, {"body": body[:200].decode(errors="replace")}
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


def _wait_for(predicate, what: str, server: subprocess.Popen, log: Path):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        if server.poll() is not None:
            pytest.fail(f"`make run` exited ({server.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def _postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        with_data = " ".join(process.info.get("cmdline") or [])
        if (process.info.get("name") or "").startswith("postgres") and str(pgdata) in with_data:
            found.append(process)
    return found


def test_readme_lists_the_commands_this_test_runs():
    section = first_steps()
    commands = inline_commands(section)
    assert "make run" in section
    assert any("createsuperuser --noinput" in c for c in commands), commands
    assert any("create_api_key" in c for c in commands), commands
    assert "curl" in shell_block(section)


def test_the_first_steps_run_as_written_on_a_fresh_copy_with_env_from_the_example(tmp_path):
    repo = tmp_path / "ragsite"
    _copy_checkout(repo)
    port = _free_port()
    env = _newcomer_env(port)
    section = first_steps()

    # The README's optional first step, and the one the issue saw fail: every value in it empty.
    subprocess.run("cp .env.example .env", shell=True, cwd=repo, env=env, check=True)

    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            ["make", "run"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _get(f"{base}/ready")[0] == 200, "/ready", server, log)

        commands = inline_commands(section)
        superuser = next(c for c in commands if "createsuperuser --noinput" in c)
        done = subprocess.run(
            superuser.replace("DJANGO_SUPERUSER_PASSWORD=...", "DJANGO_SUPERUSER_PASSWORD=first-hour-pw"),
            shell=True, cwd=repo, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

        key_command = next(c for c in commands if "create_api_key" in c)
        made = subprocess.run(key_command, shell=True, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]

        script = shell_block(section).replace("KEY=...", f"KEY={key}").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        ran = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        replies = json_values(ran.stdout)
        assert len(replies) == 2, ran.stdout
        created, found = replies
        assert created.get("id"), created
        assert any(hit.get("document_id") == created["id"] for hit in found.get("results", [])), found

        # The worker runs: semantic search needs the document's embeddings, which only it makes.
        headers = {"Authorization": f"Bearer {key}"}
        question = urllib.request.quote("how is green tea made")

        def semantic_hit():
            status, body = _get(f"{base}/api/search/?q={question}&mode=semantic", headers)
            return status == 200 and any(h.get("document_id") == created["id"] for h in body.get("results", []))

        _wait_for(semantic_hit, "the worker to embed the pasted document", server, log)

        # The superuser line made a user who can sign in to the admin.
        check = subprocess.run(
            [".venv/bin/python", "manage.py", "shell", "-c",
             "from django.contrib.auth.models import User; u = User.objects.get(username='admin');"
             "print(u.is_superuser and u.check_password('first-hour-pw'))"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert check.stdout.strip().splitlines()[-1] == "True", check.stderr

        # Ctrl-C in the terminal: SIGINT to the whole foreground process group.
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=WAIT)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]
    assert "RuntimeDirWarning" not in output and "No directory at" not in output, output[-3000:]
    deadline = time.monotonic() + 60
    while _postgres_processes(repo / "var" / "postgres") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _postgres_processes(repo / "var" / "postgres"), "the embedded PostgreSQL outlived Ctrl-C"
