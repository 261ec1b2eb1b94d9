"""The package's layout (duolift_bundle/__init__.py): every import runs downward or within a floor,
so that a module never depends on one that builds on it."""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT

#: the floors, bottom first: the first part of a module's name below duolift_bundle
FLOORS = [
    {"constants", "errors", "io_utils", "geometry", "registry", "shipped", "losses", "viz", "__init__"},
    {"imaging"},
    {"inputs"},
    {"metrics"},
    {"transforms"},
    {"datasets"},
    {"synthetic"},
    {"networks"},
    {"engines"},
    {"serving"},
]
PACKAGE = ROOT / "duolift_bundle"


def _floor(name: str) -> int:
    top = name.split(".")[0]
    found = [i for i, floor in enumerate(FLOORS) if top in floor]
    assert found, f"duolift_bundle.{name} is on no floor of the layout (add it to FLOORS and the package docstring)"
    return found[0]


def _imports(path) -> set[str]:
    """The bundle modules ``path`` imports (at the top or inside a function), below ``duolift_bundle.``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n[len("duolift_bundle.") :] for n in names if n.startswith("duolift_bundle.")}
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_downward(path):
    name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    upward = [dep for dep in sorted(_imports(path)) if _floor(dep) > _floor(name)]
    assert upward == [], f"duolift_bundle.{name} (floor {_floor(name)}) imports from a floor above: {upward}"


def test_the_layout_is_the_documented_one():
    """Every folder of the package is a floor, and the package docstring names each."""
    import duolift_bundle

    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set().union(*FLOORS[1:]) - {"serving"}
    for floor in FLOORS[1:]:
        for name in floor:
            assert f"duolift_bundle.{name}`" in duolift_bundle.__doc__, name
