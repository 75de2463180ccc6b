"""Every relative link in the user-facing Markdown resolves to a file or folder of the
repository, and every ``#anchor`` into a Markdown page to one of its headings."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "checkpoints/README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
# [text](target) and [text](target "title"); images too. Targets with a scheme are external.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _without_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def link_targets(text: str) -> list[str]:
    """Every link target of ``text`` outside fenced code blocks, as written."""
    return [match.group(1) for match in LINK.finditer(_without_code(text))]


def relative_links(text: str) -> list[str]:
    """The link targets of ``text`` that point inside the repository (no scheme, not an anchor
    alone), without their ``#fragment``; links inside fenced code blocks are not links."""
    return [t.split("#", 1)[0] for t in link_targets(text) if not EXTERNAL.match(t) and not t.startswith("#")]


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page: lower case, punctuation other
    than ``-`` and ``_`` dropped, spaces to ``-``."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _without_code(text), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_link_parser_finds_relative_links_only():
    text = "[a](docs/x.md) [b](https://x.org/y) [c](#top) ![d](fig.png \"t\") [e](../up.md#s)\n```\n[f](no.md)\n```\n"
    assert relative_links(text) == ["docs/x.md", "fig.png", "../up.md"]
    assert heading_anchors("# Models and weights\n## Spread: CPU (x86) levels\n```\n# not a heading\n```\n") == {
        "models-and-weights", "spread-cpu-x86-levels"}


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    path = ROOT / page
    missing = []
    for target in relative_links(path.read_text(encoding="utf-8")):
        resolved = (path.parent / target).resolve()
        if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
            missing.append(target)
    assert not missing, f"{page}: links to nothing in the repository: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_anchors_name_a_heading(page):
    path = ROOT / page
    wrong = []
    for target in link_targets(path.read_text(encoding="utf-8")):
        if EXTERNAL.match(target) or "#" not in target:
            continue
        file, anchor = target.split("#", 1)
        linked = (path.parent / file) if file else path
        if linked.suffix == ".md" and linked.is_file() and anchor not in heading_anchors(linked.read_text(encoding="utf-8")):
            wrong.append(target)
    assert not wrong, f"{page}: anchors that name no heading: {wrong}"


def test_readme_and_results_have_links():
    # the guide and the results page link their commands' docs; a parser that found none would pass anything
    assert len(relative_links((ROOT / "README.md").read_text())) >= 5
    assert len(relative_links((ROOT / "docs" / "results.md").read_text())) >= 2
