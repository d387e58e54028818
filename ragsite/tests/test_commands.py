"""The commands the project package owns: the task worker and the server every app's work runs in."""

from __future__ import annotations

from django.core.management import get_commands, load_command_class
from django_tasks_db.management.commands.db_worker import Command as LibraryWorkerCommand


def test_db_worker_and_serve_are_ragsites_own_commands():
    commands = get_commands()
    assert commands["serve"] == "ragsite"
    # ragsite's db_worker (start-up hooks, dead workers' tasks re-queued, clean stop) wins over
    # the library's command of the same name.
    assert commands["db_worker"] == "ragsite"
    worker = load_command_class("ragsite", "db_worker")
    assert isinstance(worker, LibraryWorkerCommand) and type(worker) is not LibraryWorkerCommand


def test_manage_py_help_lists_both_under_ragsite(manage):
    result = manage("help")
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("[ragsite]", 1)[1].split("\n\n", 1)[0]
    assert "db_worker" in section and "serve" in section
