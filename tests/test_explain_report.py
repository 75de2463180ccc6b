"""An explained score: every system's score of each painting with its own range, MTPG-AIAA's
level probabilities and description, CG-IAA's critiques (``mtpg_aiaa.explain``), on one
self-contained page (``mtpg_aiaa.eval.report``, ``demo.py --report``) — checked as HTML
everywhere and, where Chromium is installed, as the text a person sees once it is rendered."""
from __future__ import annotations

import base64
import csv as csv_module
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import load_script
from mtpg_aiaa.api import create_scorer
from mtpg_aiaa.eval.report import CALIBRATION_NOTE, write_report
from mtpg_aiaa.explain import explain
from mtpg_aiaa.models.cgiaa.scorer import build_cgiaa_scorer
from mtpg_aiaa.models.mtpg.prompts import LEVELS
from mtpg_aiaa.models.registry import get_model_entry, list_models

CRITIQUES = {
    "color": ["warm ochres against a cold teal sky", "muted greys with one red accent"],
    "composition": ["the horizon sits on the lower third", "a crowded centre and empty edges"],
    "dof": ["everything is in focus", "the foreground figure is sharp, the background soft"],
    "general": ["a calm and balanced landscape", "a busy scene that holds together"],
}
DESCRIPTIONS = ["An oil landscape at dusk with a river.", "A market scene painted in thick strokes."]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("explain")
    generator = torch.Generator().manual_seed(0)
    images = []
    for i, size in enumerate([(64, 48), (40, 72)]):
        pixels = (torch.rand(size[1], size[0], 3, generator=generator) * 255).to(torch.uint8).numpy()
        images.append(folder / f"painting{i}.png")
        Image.fromarray(pixels).save(images[-1])
    torch.manual_seed(0)
    mtpg = get_model_entry("mtpg").build(backbone="LongCLIP-tiny", fusion="token", fusion_heads=4, prompts="clean")
    cgiaa = build_cgiaa_scorer(clip="LongCLIP-tiny")
    csv = folder / "critiques.csv"
    with open(csv, "w", newline="") as handle:  # critiques hold commas: quoted as CSV does
        writer = csv_module.writer(handle)
        writer.writerow(["image", *CRITIQUES])
        writer.writerows([path.name, *(CRITIQUES[a][i] for a in CRITIQUES)] for i, path in enumerate(images))
    for path, text in zip(images, DESCRIPTIONS):
        path.with_suffix(".txt").write_text(text)  # the demo's sidecar descriptions
    return {"images": images, "mtpg": mtpg.save(folder / "mtpg.safetensors"),
            "cgiaa": cgiaa.save(folder / "cgiaa.safetensors"), "critiques": csv}  # fmt: skip


@pytest.fixture(scope="module")
def entries(files) -> list[dict]:
    texts = {"description": DESCRIPTIONS, **CRITIQUES}
    return explain(files["images"], {"mtpg": files["mtpg"], "cgiaa": files["cgiaa"], "aesnet": None}, texts)


def test_explain_gives_each_systems_score_details_and_texts(files, entries):
    by_system = [{r["system"]: r for r in entry["systems"]} for entry in entries]
    mtpg_scores = create_scorer("mtpg", weights=files["mtpg"]).score(files["images"], descriptions=DESCRIPTIONS)
    cgiaa_scores = create_scorer("cgiaa", weights=files["cgiaa"]).score(files["images"], texts=CRITIQUES)
    for i, systems in enumerate(by_system):
        mtpg, cgiaa = systems["mtpg"], systems["cgiaa"]
        assert mtpg["pred"] == pytest.approx(mtpg_scores.scores[i], abs=1e-5)  # the API's batched loop agrees
        assert mtpg["range"] == [0.0, 1.0] and mtpg["pred_0_10"] == pytest.approx(10 * mtpg["pred"])
        levels = mtpg["details"]["aesthetic levels"]
        assert list(levels) == list(LEVELS) and sum(levels.values()) == pytest.approx(1.0, abs=1e-5)
        assert list(levels.values()) == pytest.approx(mtpg_scores.distributions[i], abs=1e-5)
        assert mtpg["texts"] == {"description": DESCRIPTIONS[i]}
        assert cgiaa["pred"] == pytest.approx(cgiaa_scores.scores[i], abs=1e-5)
        assert cgiaa["texts"] == {a: CRITIQUES[a][i] for a in CRITIQUES}
        for result in (mtpg, cgiaa):
            outside = not result["range"][0] <= result["pred"] <= result["range"][1]
            assert ("this score lies outside the system's stated range 0-1" in result["notes"]) == outside
        assert systems["aesnet"]["unavailable"].startswith("no weights given; its authors released no code")


def test_a_system_without_its_texts_is_one_line_and_a_wrong_file_is_refused(files):
    [entry] = explain(files["images"][:1], {"cgiaa": files["cgiaa"], "mtpg": files["mtpg"]})
    cgiaa, mtpg = entry["systems"]
    assert cgiaa["unavailable"] == "not scored: no color, composition, dof, general text given for this image"
    assert mtpg["notes"] == ["no description given: scored with an empty one"]
    with pytest.raises(ValueError, match="holds a 'mtpg' model, not 'cgiaa'"):
        explain(files["images"][:1], {"cgiaa": files["mtpg"]})


def test_a_score_outside_its_stated_range_says_so(files, tmp_path):
    scorer = build_cgiaa_scorer(clip="LongCLIP-tiny")
    with torch.no_grad():
        scorer.head.bias.fill_(5.0)  # the scalar head is unbounded: 5 is far above the stated 0-1
    [entry] = explain(files["images"][:1], {"cgiaa": scorer.save(tmp_path / "high.safetensors")},
                      {a: column[:1] for a, column in CRITIQUES.items()})  # fmt: skip
    [result] = entry["systems"]
    assert result["pred"] > 1 and result["notes"] == ["this score lies outside the system's stated range 0-1"]


def test_default_details_show_a_predicted_distribution():
    scorer = build_cgiaa_scorer(clip="LongCLIP-tiny", bins=3)
    details = scorer.describe_outputs({"score": torch.zeros(1), "distribution": torch.tensor([[0.2, 0.3, 0.5]])})
    assert details == [{"predicted distribution": pytest.approx({"1": 0.2, "2": 0.3, "3": 0.5})}]
    assert build_cgiaa_scorer(clip="LongCLIP-tiny").describe_outputs({"score": torch.zeros(2)}) == [{}, {}]


class _Page(HTMLParser):
    """Every tag with its attributes, and the visible text outside <style>."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.system_names: list[str] = []  # a system's box heading, or the start of its one line
        self._open, self._naming = "", False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open, self._naming = tag, dict(attrs).get("class") == "system-name"

    def handle_endtag(self, tag):
        self._open, self._naming = "", False

    def handle_data(self, data):
        if self._open != "style":
            self.text.append(data)
        if self._naming:
            self.system_names.append(data.strip())


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def demo_page(files, tmp_path_factory) -> Path:
    """``demo.py --report`` in-process: MTPG as --ckpt (sidecar descriptions), CG-IAA as --scorer
    with the critique cache, AesNet without weights."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    demo = load_script("demo.py")
    code = demo.main([*map(str, files["images"]), "--ckpt", str(files["mtpg"]), "--scorer", str(files['cgiaa']),
                      "--critiques", str(files["critiques"]), "--report", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_report_page_is_self_contained_and_shows_every_system(demo_page, files, entries):
    page = _parse(demo_page)
    names = [tag for tag, _ in page.tags]
    assert "script" not in names and "link" not in names and "iframe" not in names
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert len(images) == len(files["images"])
    for src in images:
        assert src.startswith("data:image/jpeg;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    raw = demo_page.read_text(encoding="utf-8")
    assert not re.search(r"(https?:)?//[\w.-]+\.\w", raw.replace("data:image/jpeg;base64,", "")), "a network reference"
    assert sorted(page.system_names) == sorted(list_models() * len(images))  # every system beside every painting
    text = " ".join(page.text)
    assert CALIBRATION_NOTE in text
    for entry in entries:  # the same numbers as explain() gives in-process
        for result in entry["systems"]:
            if "pred" in result:
                assert f"{result['pred']:.4f}" in text
    for column in CRITIQUES.values():
        for critique in column:
            assert critique in text
    assert get_model_entry("aesnet").weights_help in text


def _browser() -> str | None:
    found = [shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")]
    return next((path for path in found if path), None)


@pytest.mark.skipif(_browser() is None or shutil.which("pdftotext") is None,
                    reason="no chromium / pdftotext binary (.ci/run installs the Debian packages "
                           "chromium and poppler-utils)")
def test_rendered_page_shows_scores_and_critiques_to_a_person(demo_page, entries, tmp_path):
    """Chromium lays the page out and prints it; pdftotext reads the printed glyphs back, so
    only what a person would see counts (text hidden by the style sheet, or never laid out,
    would not be there)."""
    pdf = tmp_path / "report.pdf"
    subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                    f"--print-to-pdf={pdf}", demo_page.as_uri()],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    seen = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    seen = " ".join(seen.split())
    for entry in entries:
        assert Path(entry["image"]).name in seen
        for result in entry["systems"]:
            if "pred" in result:
                assert f"score {result['pred']:.4f} on its range" in seen, result["system"]
    for column in CRITIQUES.values():
        for critique in column:
            assert critique in seen
    for level in LEVELS:
        assert level in seen
    assert "it is not a calibration" in seen
    assert "aesnet: no weights given; its authors released no code or weights" in seen
