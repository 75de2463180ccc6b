"""Fixtures shared by several test files (plain helpers are in ``helpers.py``)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import load_script


@pytest.fixture(scope="session")
def make_smoke(tmp_path_factory):
    """``make_smoke(num_images, seed)``: generated images, ``labels.csv`` and a tiny random
    checkpoint (``scripts/make_smoke_data.py``), built once per session for each argument
    pair. Shared: a test that changes files makes its own copy."""
    write_smoke_data = load_script("scripts/make_smoke_data.py").write_smoke_data
    built: dict[tuple[int, int], dict] = {}

    def make(num_images: int, seed: int) -> dict:
        if (num_images, seed) not in built:
            built[num_images, seed] = write_smoke_data(tmp_path_factory.mktemp(f"smoke{num_images}_{seed}"), num_images, seed)
        return built[num_images, seed]

    return make


@pytest.fixture(scope="session")
def official_ckpt(tmp_path_factory) -> Path:
    """A tiny MTPG-AIAA in the authors' released layout (``model_save.pt``) whose head
    weights are spread, so scores differ visibly between samples and batches."""
    from mtpg_aiaa.models.mtpg.checkpoint import save_official_checkpoint
    from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg

    torch.manual_seed(3)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny"))
    with torch.no_grad():
        for p in model.fusion.parameters():
            p.normal_(0, 0.05)
    return save_official_checkpoint(model, tmp_path_factory.mktemp("official") / "model_save.pt")


@pytest.fixture
def torch_threads():
    """``torch_threads(n)`` sets torch's intra-op thread count for this test only."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def one_thread(torch_threads):
    """One intra-op thread for this test: tiny models on a shared machine avoid 20x slow-downs
    from thread contention (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    torch_threads(1)


@pytest.fixture(autouse=True)
def _cpu_unless_marked_cuda(request, monkeypatch):
    """CPU tests run on the CPU even where CUDA is visible: configs default to ``device: auto``,
    and a test that composes one or starts ``train.py``/``test.py`` would otherwise initialise
    CUDA, cast the backbone to fp16 and compare against CPU figures. Tests marked ``cuda``
    (tests/test_cuda.py) are the ones meant to use the GPU."""
    if request.node.get_closest_marker("cuda") is not None:
        return
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # commands the test starts see no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # device=auto in this process
