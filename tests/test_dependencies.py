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


def _imported_top_level(path) -> tuple[set[str], set[str]]:
    """Top-level names of the modules `path` imports: (at module level, inside functions)."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    outer, inner = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = {node.module.split(".")[0]}
        else:
            continue
        (outer if id(node) in top else inner).update(names)
    return outer, inner


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    """(the dependencies, those of the optional extras)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(deps):
        return {_normalise(re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0]) for dep in deps}

    extras = set().union(*(names(deps) for deps in project["optional-dependencies"].values()))
    return names(project["dependencies"]), extras


def test_every_third_party_import_is_a_declared_dependency():
    """Module-level imports need a dependency; imports inside functions (what an optional
    feature uses, such as timm's hub client) need at least an optional extra."""
    distributions = importlib.metadata.packages_distributions()
    outer, inner = set(), set()
    for path in _sources():
        found_outer, found_inner = _imported_top_level(path)
        outer |= found_outer
        inner |= found_inner
    stdlib = set(sys.stdlib_module_names) | {"camlight", "__future__"}
    outer, inner = outer - stdlib, inner - stdlib - outer
    assert {"torch", "PIL", "scipy"} <= outer and "tqdm" in inner  # both kinds are seen
    required, optional = _declared()
    missing = {}
    for name, allowed in [*((n, required) for n in outer), *((n, required | optional) for n in inner)]:
        dists = {_normalise(d) for d in distributions.get(name, [name])}
        if not dists & allowed:
            missing[name] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_module_of_the_package_imports():
    for path in sorted((REPO / "camlight").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        importlib.import_module(name)
