"""A fresh install gets what the code imports, whatever pip's version: every third-party module
the project imports comes from a package pinned in requirements*.txt (the runtime code's from
requirements.txt itself), and a package that a dependency asks for through an extra
(``lxml[html_clean]``) is pinned by name, since older pips do not resolve such extras.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".venv", "var", "staticfiles", "node_modules", ".git", "docs"}
# Outside the runtime: their imports may be pinned in requirements-dev.txt alone.
DEV_ONLY_DIRS = {"tests", "bench"}


def pins(path: Path) -> dict[str, Requirement]:
    found: dict[str, Requirement] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            found.update(pins(path.parent / line[3:].strip()))
            continue
        requirement = Requirement(line)
        assert len(requirement.specifier) == 1 and next(iter(requirement.specifier)).operator == "==", (
            f"{path.name}: {line!r} is not pinned to one version"
        )
        found[canonicalize_name(requirement.name)] = requirement
    return found


RUNTIME = pins(ROOT / "requirements.txt")
EVERYTHING = pins(ROOT / "requirements-dev.txt")


def project_files():
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if not SKIP_DIRS.intersection(relative.parts):
            yield relative


def own_modules() -> set[str]:
    names = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    names |= {p.stem for p in ROOT.glob("*.py")}
    # scripts run with their own folder on sys.path import their neighbours by bare name
    names |= {p.stem for p in (ROOT / "bench").glob("*.py")}
    return names


def third_party_imports() -> dict[str, set[Path]]:
    own = own_modules()
    imports: dict[str, set[Path]] = {}
    for relative in project_files():
        tree = ast.parse((ROOT / relative).read_text(), filename=str(relative))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".", 1)[0]
                if top not in sys.stdlib_module_names and top not in own and top != "__future__":
                    imports.setdefault(top, set()).add(relative)
    return imports


def test_every_imported_module_comes_from_a_pinned_package():
    distributions = md.packages_distributions()
    problems = []
    for module, files in sorted(third_party_imports().items()):
        runtime_use = any(not DEV_ONLY_DIRS.intersection(f.parts) and f.name != "conftest.py" for f in files)
        pinned = RUNTIME if runtime_use else EVERYTHING
        where = "requirements.txt" if runtime_use else "requirements*.txt"
        candidates = {canonicalize_name(d) for d in distributions.get(module, [])}
        if not candidates:
            problems.append(f"{module} (imported by {sorted(map(str, files))[0]}) is not installed")
        elif not candidates & set(pinned):
            problems.append(
                f"{module} ({', '.join(sorted(candidates))}) is imported by {sorted(map(str, files))[0]} "
                f"but not pinned in {where}"
            )
    assert not problems, "\n".join(problems)


def _requires(name: str, extras: set[str]) -> list[Requirement]:
    """The requirements a package declares for its base install plus ``extras``, here."""
    wanted = []
    for line in md.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None:
            wanted.append(requirement)
        elif any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""}):
            wanted.append(requirement)
    return wanted


def test_packages_that_dependencies_ask_for_through_extras_are_pinned_by_name():
    """Walks the runtime dependency tree; wherever a package wants ``other[extra]``, the packages
    that extra adds must be pinned, or a pip that mis-resolves the extra leaves them out."""
    seen: set[str] = set()
    queue = [(name, {canonicalize_name(e) for e in req.extras}) for name, req in RUNTIME.items()]
    missing = []
    while queue:
        name, extras = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = _requires(name, extras)
        except md.PackageNotFoundError:
            continue  # a dependency for another platform or Python
        for requirement in requirements:
            child = canonicalize_name(requirement.name)
            child_extras = {canonicalize_name(e) for e in requirement.extras}
            if child_extras:
                try:
                    added = _requires(child, child_extras)
                except md.PackageNotFoundError:
                    continue
                base = {canonicalize_name(r.name) for r in _requires(child, set())}
                for extra_requirement in added:
                    extra_name = canonicalize_name(extra_requirement.name)
                    if extra_name not in base and extra_name not in RUNTIME:
                        missing.append(f"{name} needs {requirement}: pin {extra_requirement.name}")
            queue.append((child, child_extras))
    assert not missing, "\n".join(sorted(set(missing)))
