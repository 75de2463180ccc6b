"""scripts/benchmark_inference.py: the literal released forward and ours agree, and the
check that guards the speed figures fails when they do not."""
from __future__ import annotations

import sys

import pytest
import torch

from helpers import load_script
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg

benchmark = load_script("scripts/benchmark_inference.py")


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny")).eval()
    with torch.no_grad():  # a spread head, so a wrong input shows in the probabilities
        for p in model.fusion.parameters():
            p.normal_(0, 0.05)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 224, 224, generator=generator)
    return model, images, benchmark.make_descriptions(2, generator)


def test_literal_and_our_forward_agree(model_and_batch):
    model, images, descriptions = model_and_batch
    assert benchmark.check_paths_agree(model, images, descriptions, tolerance=1e-5) <= 1e-5


def test_disagreeing_paths_stop_the_benchmark(model_and_batch):
    model, images, descriptions = model_and_batch

    def misaligned(model, images, descriptions):  # descriptions shifted by one painting
        return benchmark.our_forward(model, images, descriptions[1:] + descriptions[:1])

    def not_a_number(model, images, descriptions):
        return torch.full((len(images), 5), float("nan"))

    for broken in (misaligned, not_a_number):
        with pytest.raises(benchmark.PathsDisagree, match="paths disagree"):
            benchmark.check_paths_agree(model, images, descriptions, tolerance=1e-5,
                                        paths={"literal": benchmark.literal_forward, "ours": broken})  # fmt: skip


def test_main_checks_before_it_times(monkeypatch):
    def disagree(*args, **kwargs):
        raise benchmark.PathsDisagree("paths disagree: planted")

    monkeypatch.setattr(benchmark, "check_paths_agree", disagree)
    monkeypatch.setattr(benchmark, "time_paths", lambda *args: pytest.fail("timed paths that disagree"))
    monkeypatch.setattr(sys, "argv", ["benchmark_inference.py", "--backbone", "LongCLIP-tiny", "--batch-size", "2",
                                      "--batches", "1", "--device", "cpu"])  # fmt: skip
    with pytest.raises(benchmark.PathsDisagree, match="planted"):
        benchmark.main()
