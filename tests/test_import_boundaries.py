"""The systems are siblings: no file of one system reaches into another's folders, and generic
code (engine, data, eval, backbone, the commands, the scripts) reaches a system only through
the registries. Read without importing anything: Python files are parsed (``import``,
``from ... import``, and every string naming ``mtpg_aiaa.<module>``, which covers
``get_method`` / ``import_module`` / ``_target_`` names), configs and system declarations are
scanned for such dotted names.

A system's folders: ``mtpg_aiaa/models/<s>/``, ``mtpg_aiaa/engine/tasks/<s>/``,
``mtpg_aiaa/experiments/<s>/``, ``configs/model/<s>/``, ``configs/task/<s>/``; the systems are
the registered ones (``models/<s>/system.json``), not a list written here.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

from helpers import ROOT

DOTTED = re.compile(r"mtpg_aiaa(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
# where generic code may name systems: the registries themselves
REGISTRIES = {"mtpg_aiaa/models/registry.py", "mtpg_aiaa/models/__init__.py", "mtpg_aiaa/engine/tasks/__init__.py"}
# (file, imported module prefix) pairs tolerated while a crossing is being removed, each with
# who removes it; empty: no crossing is tolerated.
ALLOWED_FOR_NOW: set[tuple[str, str]] = set()
# Tools of one system: a script that drives one system's own parts (its released weights,
# its data) belongs to that system, as its folders do.
SYSTEM_SCRIPTS = {
    "scripts/critique.py": "cgiaa",  # the released experts' critiques
    "scripts/benchmark_critique.py": "cgiaa",
    "scripts/report_example.py": "cgiaa",
    "scripts/export_aesnet.py": "aesnet",  # an AesNet run's weights for use elsewhere  # the toy critiques CSV; MTPG-AIAA comes through the registry
    "scripts/benchmark_inference.py": "mtpg",  # the released fusion's batching, MTPG's prompts
    "scripts/make_smoke_data.py": "mtpg",  # a tiny MTPG checkpoint for the smoke tests
    "scripts/gpu_check_parts.py": "mtpg",  # MTPG's CUDA paths (feature table, released layout)
}


def registered_systems() -> set[str]:
    return {path.parent.name for path in (ROOT / "mtpg_aiaa" / "models").glob("*/system.json")}


SYSTEMS = registered_systems()
SYSTEM_FOLDERS = (("mtpg_aiaa", "models"), ("mtpg_aiaa", "engine", "tasks"), ("mtpg_aiaa", "experiments"),
                  ("configs", "model"), ("configs", "task"))  # fmt: skip


def system_of_parts(parts: tuple[str, ...]) -> str | None:
    """The system whose folder ``parts`` (path components or a dotted module) lies in."""
    for folder in SYSTEM_FOLDERS:
        n = len(folder)
        if parts[:n] == folder and len(parts) > n and parts[n] in SYSTEMS:
            return parts[n]
    return None


def owner(relative: str) -> str | None:
    return SYSTEM_SCRIPTS.get(relative) or system_of_parts(Path(relative).with_suffix("").parts)


def python_names(source: str, relative: str) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import and every ``mtpg_aiaa.*`` string in the file
    ``relative`` (from the repository root) whose text is ``source``."""
    package = Path(relative).parent.parts  # what a relative import's first dot means
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            yield node.lineno, ".".join(module)
            yield from ((node.lineno, ".".join([*module, alias.name])) for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield from ((node.lineno, name) for name in DOTTED.findall(node.value.replace(":", ".")))


def text_names(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every ``mtpg_aiaa.*`` name in a config or declaration (comments dropped)."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        code = line.split("#", 1)[0] if path.suffix == ".yaml" else line
        yield from ((number, name) for name in DOTTED.findall(code.replace(":", ".")))


def scanned_files() -> list[Path]:
    files = [*ROOT.glob("mtpg_aiaa/**/*.py"), *ROOT.glob("mtpg_aiaa/**/system.json"), *ROOT.glob("scripts/**/*.py"),
             *ROOT.glob("configs/**/*.yaml"), *(ROOT / name for name in ("train.py", "test.py", "demo.py"))]  # fmt: skip
    return sorted(path for path in files if path.is_file())


def boundary_crossings(allowed: set[tuple[str, str]] = ALLOWED_FOR_NOW) -> list[str]:
    """``"file:line (who -> whom) module"`` for every crossing not in ``allowed``."""
    found = []
    for path in scanned_files():
        relative = path.relative_to(ROOT).as_posix()
        names = python_names(path.read_text(encoding="utf-8"), relative) if path.suffix == ".py" else text_names(path)
        me = owner(relative)
        for line, name in names:
            target = system_of_parts(tuple(name.split(".")))
            if target is None or target == me or relative in REGISTRIES:
                continue
            if any(relative == file and name.startswith(prefix) for file, prefix in allowed):
                continue
            kind = f"{me} -> {target}" if me else f"generic -> {target}"
            found.append(f"{relative}:{line} ({kind}) {name}")
    return sorted(set(found))


def test_no_import_crosses_a_system_boundary_outside_the_registries():
    crossings = boundary_crossings()
    assert not crossings, "imports across system boundaries:\n" + "\n".join(crossings)


def test_every_pair_allowed_for_now_still_occurs():
    """The allow-list only shrinks: a pair whose import is gone must leave ALLOWED_FOR_NOW."""
    every = boundary_crossings(allowed=set())
    stale = [(file, prefix) for file, prefix in sorted(ALLOWED_FOR_NOW)
             if not any(c.startswith(f"{file}:") and c.split(" ")[-1].startswith(prefix) for c in every)]  # fmt: skip
    assert not stale, f"remove from ALLOWED_FOR_NOW (no longer imported): {stale}"


def test_the_walk_sees_what_it_must():
    """The scan reads scripts, experiments, configs' ``_target_`` and string module names: a
    planted crossing of each kind is found (so an empty result above means something)."""
    scanned = {path.relative_to(ROOT).as_posix() for path in scanned_files()}
    assert {"demo.py", "scripts/critique.py", "configs/train.yaml"} <= scanned
    assert any(name.startswith("mtpg_aiaa/experiments/") for name in scanned)
    assert SYSTEMS >= {"mtpg", "cgiaa", "aesnet"}
    source = ("import importlib\nfrom ..mtpg import model\n"
              "importlib.import_module('mtpg_aiaa.models.aesnet.model')\nX = 'mtpg_aiaa.models.mtpg:build'\n")
    names = [name for _, name in python_names(source, "mtpg_aiaa/models/cgiaa/x.py")]
    found = sorted(system for name in names if (system := system_of_parts(tuple(name.split(".")))))
    assert found == ["aesnet", "mtpg", "mtpg", "mtpg"]  # from ..mtpg import model (twice: module, name), the string
    assert owner("mtpg_aiaa/experiments/cgiaa/toy_quickstart.py") == "cgiaa" and owner("configs/task/aesnet/x.yaml") == "aesnet"
    assert owner("mtpg_aiaa/engine/trainer.py") is None and owner("scripts/prepare_dataset.py") is None
    assert json.loads((ROOT / "mtpg_aiaa/models/mtpg/system.json").read_text())["build"].startswith("mtpg_aiaa.models.mtpg")

