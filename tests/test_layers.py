"""The layers of docs/ARCH (issue 16), checked on the source: every import in every module,
including imports inside functions, which is where import circles used to hide.

Bottom up; an app imports only apps on a lower floor (its own modules aside):

    ragsite (project package)   0   settings, plumbing; imports no app
    accounts                    1   API keys and authentication
    documents                   2   sources, documents, chunks, parsing, ingestion
    vectors                     3   embedders, vector stores, sync
    search, crawl               4   (not each other)
    agents                      5   the MCP server

Project wiring may import every app: ``ragsite.urls``, ``ragsite.wsgi``/``asgi`` and the project-wide tests of
``ragsite/tests`` (admin, health over every app). Outside the apps (``tests/``, ``bench/``,
``conftest.py``, ``docker/``, ``manage.py``) nothing is checked. Modules must not import each
other in a circle either, counting function-level imports.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {"ragsite": 0, "accounts": 1, "documents": 2, "vectors": 3, "search": 4, "crawl": 4, "agents": 5}
WIRING = ("ragsite.urls", "ragsite.wsgi", "ragsite.asgi", "ragsite.tests")
SKIP_DIRS = {".venv", "var", ".git", "node_modules", "__pycache__", "test-artifacts"}

# Crossings and circles tolerated for now, each with the reason (none since issue 16 landed):
# an entry must still occur, so the lists can only shrink.
KNOWN_CROSSINGS: set[tuple[str, str]] = set()
KNOWN_CIRCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for file in files:
            if file.endswith(".py"):
                path = Path(folder) / file
                found[_module_name(path)] = path
    return found


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module ``module`` imports (the deepest one that exists here, or the name as written)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                names.add(candidate if candidate in modules else base)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _sources()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _app(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in FLOORS else None


def crossings(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(module, imported app) for every import that goes sideways or up."""
    found = set()
    for module, imported in graph.items():
        own = _app(module)
        if own is None or module.startswith(WIRING):
            continue
        for name in imported:
            other = _app(name)
            if other is not None and other != own and FLOORS[other] >= FLOORS[own]:
                found.add((module, other))
    return found


def circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Groups of modules that import each other in a circle (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(root: str) -> None:
        # Iterative, so a long import chain cannot hit the recursion limit.
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in graph:
                    continue
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.add(frozenset(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_every_app_imports_only_apps_on_lower_floors():
    found = crossings(_graph())
    new = sorted(found - KNOWN_CROSSINGS)
    assert not new, "imports that go sideways or up a floor:\n" + "\n".join(f"  {m} -> {a}" for m, a in new)
    gone = sorted(KNOWN_CROSSINGS - found)
    assert not gone, f"no longer crossing, remove from KNOWN_CROSSINGS: {gone}"


def test_no_modules_import_each_other_in_a_circle():
    found = circles(_graph())
    new = [sorted(group) for group in found - KNOWN_CIRCLES]
    assert not new, f"import circles (function-level imports count): {new}"
    gone = [sorted(group) for group in KNOWN_CIRCLES - found]
    assert not gone, f"no longer circles, remove from KNOWN_CIRCLES: {gone}"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "__init__.py").write_text("")
    (tmp_path / "documents" / "a.py").write_text("def f():\n    from vectors.sync import x\n    from . import b\n")
    (tmp_path / "documents" / "b.py").write_text("from .a import f\n")
    (tmp_path / "vectors").mkdir()
    (tmp_path / "vectors" / "__init__.py").write_text("")
    (tmp_path / "vectors" / "sync.py").write_text("x = 1\n")
    monkeypatch.setattr(__name__ + ".ROOT", tmp_path)

    graph = _graph()

    assert crossings(graph) == {("documents.a", "vectors")}
    assert circles(graph) == {frozenset({"documents.a", "documents.b"})}
