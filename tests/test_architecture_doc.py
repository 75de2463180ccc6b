"""``docs/architecture.md`` stays true: every test it names exists (a claim there is a test
somewhere), and every repository path it names is a file or folder of the repository."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
TEST_NODE = re.compile(r"tests/(test_\w+\.py)(?:::(\w+))?")
PATH = re.compile(r"`((?:mtpg_aiaa|configs|engine|models|backbone|eval|data|losses|experiments)/[\w/.*<>-]+)`")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_test_the_page_names_exists():
    named = TEST_NODE.findall(PAGE)
    assert len(named) >= 10  # the page backs its claims with tests
    missing = [f"{file}::{name}" if name else file for file, name in named
               if not (ROOT / "tests" / file).is_file() or (name and name not in _test_names(ROOT / "tests" / file))]
    assert not missing, f"docs/architecture.md names tests that do not exist: {missing}"


def test_every_path_the_page_names_exists():
    missing = []
    for written in PATH.findall(PAGE):
        if "<" in written or "*" in written or "/foo" in written:  # a pattern or the example system
            continue
        module, _, attribute = written.rpartition(".")
        if attribute and "/" not in attribute and attribute not in ("py", "json", "yaml", "md"):
            written = f"{module}.py"  # engine/trainer.Task: a name in engine/trainer.py
        candidates = [ROOT / written, ROOT / "mtpg_aiaa" / written]
        if not any(c.exists() for c in candidates):
            missing.append(written)
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
