"""Everything camlight imports is declared in pyproject.toml, and every module imports."""

import ast
import importlib
import importlib.metadata
import re
import sys

import pytest

from .conftest import REPO

tomllib = pytest.importorskip("tomllib")


def _sources():
    return [*sorted((REPO / "camlight").rglob("*.py")), REPO / "train.py", REPO / "explain.py"]


def _imported_top_level(path) -> set[str]:
    """Top-level names of every module `path` imports, wherever in the file the import stands."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_normalise(re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0]) for dep in project["dependencies"]}


def test_every_third_party_import_is_a_declared_dependency():
    distributions = importlib.metadata.packages_distributions()
    third_party = set()
    for path in _sources():
        for name in _imported_top_level(path):
            if name in sys.stdlib_module_names or name in ("camlight", "__future__"):
                continue
            third_party.add(name)
    assert {"torch", "PIL", "tqdm", "scipy"} <= third_party  # the check sees imports inside functions too
    declared = _declared()
    missing = {}
    for name in sorted(third_party):
        dists = {_normalise(d) for d in distributions.get(name, [name])}
        if not dists & declared:
            missing[name] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_module_of_the_package_imports():
    for path in sorted((REPO / "camlight").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        importlib.import_module(name)
