"""What an installed wheel needs: no module of the package imports the tests or a test tool.

A wheel (``pip install beanbill``) has no ``tests/``, and its dependencies are [project]
dependencies only: an import of ``tests`` or ``saxonche`` in the package breaks it for
everyone outside a source checkout. Read statically (``ast``), so nothing is imported.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FOLDERS = ("beanbill", "rating", "ledger", "sync", "connectors")
FORBIDDEN_IMPORTS = frozenset({"tests", "saxonche"})
TEST_ONLY_DEPENDENCIES = frozenset({"saxonche", "localstripe", "schemathesis"})
MAXIMUM_MODULES = 500  # far above today's count: a runaway walk (a symlink loop) fails fast


def package_modules() -> list[Path]:
    """Every .py file of the package's folders, each once (beanbill/rating is a symlink)."""
    found: dict[Path, Path] = {}
    for folder in PACKAGE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found.setdefault(path.resolve(), path)
            assert len(found) <= MAXIMUM_MODULES, "more modules than expected: check the walk"
    return sorted(found.values())


def imported_top_names(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of each absolute import, wherever it stands (lazy ones too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif isinstance(node, ast.Call) and _called_name(node) == "import_module" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value.split(".")[0]


def _called_name(call: ast.Call) -> str:
    """``import_module`` for both ``importlib.import_module(...)`` and ``import_module(...)``."""
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else ""


def test_no_package_module_imports_the_tests_or_saxon() -> None:
    modules = package_modules()
    assert len(modules) > 10  # the walk found the package, not an empty folder
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules
        for line, name in imported_top_names(ast.parse(path.read_text(), str(path)))
        if name in FORBIDDEN_IMPORTS
    ]
    assert offenders == []


def requirement_name(requirement: str) -> str:
    """The distribution name of a requirement string ("saxonche>=12.5" → "saxonche")."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return match.group(0).lower().replace("_", "-")


def test_test_tools_are_no_runtime_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {requirement_name(r) for r in project["dependencies"]}
    assert runtime & TEST_ONLY_DEPENDENCIES == set()
    extras = project["optional-dependencies"]
    assert {requirement_name(r) for r in extras["demo"]} == {"localstripe", "aiosmtpd"}
    assert {requirement_name(r) for r in extras["dev"]} >= TEST_ONLY_DEPENDENCIES
