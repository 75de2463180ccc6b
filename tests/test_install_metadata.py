"""The package's declared dependencies (pyproject.toml, ranges) against the lock `make`
installs (requirements*.txt, pins) and the imports of the code. `make install-check` does the
same through pip in the real environment; these run in-process on every test run."""
from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    """Every requirement of pyproject.toml, the extras' included, by canonical name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {canonicalize_name(req.name): req for req in map(Requirement, lines)}


def pinned() -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of the lock files."""
    pins = {}
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-r"):
                req = Requirement(line)
                (spec,) = req.specifier
                assert spec.operator == "==", f"{name}: {line} is not an exact pin"
                pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_every_declared_dependency_is_pinned_inside_its_range():
    pins = pinned()
    for name, req in declared().items():
        assert name in pins, f"{req} is declared in pyproject.toml but not pinned in the lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock {name}=={pins[name]} is outside {req}"
        assert any(s.operator == ">=" for s in req.specifier), f"{req}: no floor"
        assert any(s.operator == "<" for s in req.specifier), f"{req}: no ceiling"


def third_party_imports() -> set[str]:
    """Top-level modules that mtpg_aiaa/ and the entry points import, outside the standard library."""
    files = [*ROOT.joinpath("mtpg_aiaa").rglob("*.py"), *ROOT.glob("*.py")]
    modules = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("mtpg_aiaa", "__future__")}


def test_every_third_party_import_is_declared():
    distributions = importlib.metadata.packages_distributions()
    names = declared()
    undeclared = {}
    for module in sorted(third_party_imports()):
        owners = {canonicalize_name(d) for d in distributions.get(module, [])}
        if not owners & names.keys():
            undeclared[module] = sorted(owners) or ["not installed"]
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
