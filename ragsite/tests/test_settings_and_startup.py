"""Start-up: configuration errors name the variable; the embedded database keeps its data."""

from __future__ import annotations

import pytest


def test_malformed_database_url_stops_startup_naming_the_variable(manage):
    result = manage("check", env={"DATABASE_URL": "mysql://nobody@/x"})
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


def test_database_url_with_a_percent_encoded_socket_directory_connects(manage, tmp_path):
    """libpq's form for a Unix socket: the host is the directory, percent-encoded."""
    import os

    socket_dir = "/var/run/postgresql"
    if not os.path.exists(f"{socket_dir}/.s.PGSQL.5432"):
        pytest.skip("needs a local PostgreSQL server listening on its Unix socket")
    result = manage(
        "shell",
        "-c",
        "from django.db import connection; connection.ensure_connection(); print(connection.settings_dict['HOST'])",
        env={
            "DATABASE_URL": "postgresql://postgres@%2Fvar%2Frun%2Fpostgresql:5432/postgres",
            "DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == socket_dir


def test_database_url_without_a_database_name_is_refused(manage):
    result = manage("check", env={"DATABASE_URL": "postgres://postgres@127.0.0.1:5432"})
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEBUG", "maybe"), ("EMBEDDING_BACKEND", "word2vec"), ("DB_POOL_MAX_SIZE", "many"), ("LOG_LEVEL", "LOUD")],
)
def test_unknown_setting_value_stops_startup_naming_the_variable(manage, tmp_path, name, value):
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres", "DATA_DIR": str(tmp_path), name: value}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert name in result.stderr


def test_production_refuses_to_start_without_a_secret_key(manage, tmp_path):
    env = {
        "DJANGO_ENV": "production",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "DATA_DIR": str(tmp_path),
    }
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_development_run_creates_a_secret_key_once_and_reuses_it(manage, tmp_path):
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres", "DATA_DIR": str(tmp_path)}
    show = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = manage("shell", "-c", show, env=env)
    second = manage("shell", "-c", show, env=env)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "secret_key").read_text().strip()
    assert len(key) >= 50
    assert first.stdout.strip().endswith(key)
    assert second.stdout.strip().endswith(key)


def test_debug_is_off_unless_set(manage, tmp_path):
    env = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres", "DATA_DIR": str(tmp_path)}
    result = manage("shell", "-c", "from django.conf import settings; print('DEBUG', settings.DEBUG)", env=env)
    assert "DEBUG False" in result.stdout, result.stderr


@pytest.mark.slow
def test_embedded_postgres_keeps_data_across_commands(manage, tmp_path):
    env = {"DATABASE_URL": "", "DATA_DIR": str(tmp_path)}
    migrate = manage("migrate", "--noinput", env=env, timeout=300)
    assert migrate.returncode == 0, migrate.stderr
    create = manage(
        "shell",
        "-c",
        "from documents.models import Source; Source.objects.create(name='kept'); print('created')",
        env=env,
    )
    assert "created" in create.stdout, create.stderr
    read = manage(
        "shell",
        "-c",
        "from django.db import connection; from documents.models import Source;"
        "print(connection.settings_dict['HOST'].startswith('/'), list(Source.objects.values_list('name', flat=True)))",
        env=env,
    )
    assert "True ['kept']" in read.stdout, read.stderr
    assert (tmp_path / "postgres" / "PG_VERSION").is_file()


@pytest.mark.parametrize(("value", "expected"), [("", "True"), ("false", "False"), ("true", "True")])
def test_an_empty_boolean_means_its_default(manage, tmp_path, value, expected):
    # `cp .env.example .env` leaves EMBEDDED_WORKER= empty: embedded mode must still run its worker.
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.EMBEDDED_WORKER)",
        env={"DATA_DIR": str(tmp_path), "EMBEDDED_WORKER": value, "QDRANT_URL": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected


@pytest.mark.slow
def test_a_command_on_the_embedded_defaults_prints_no_warnings(manage, tmp_path):
    """A new user's first commands: no XDG_RUNTIME_DIR fallback warning, no missing static folder.

    Run the way `make run` runs them: no DATABASE_URL (embedded PostgreSQL), no XDG_RUNTIME_DIR
    (ssh sessions, containers, CI), the static folder not yet created.
    """
    static_root = tmp_path / "static"
    env = {
        "DATABASE_URL": "",
        "DATA_DIR": str(tmp_path / "data"),
        "STATIC_ROOT": str(static_root),
        "XDG_RUNTIME_DIR": "",
    }
    result = manage("migrate", "--noinput", env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    result = manage(
        "shell",
        "-c",
        "from django.test import Client; print(Client().get('/health').status_code)",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "200"
    for output in (result.stderr, result.stdout):
        assert "Warning" not in output and "warning" not in output.lower(), output
    assert static_root.is_dir()
