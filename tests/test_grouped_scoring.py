"""Scoring a wide batch in groups of 16 gives the authors' batch-16 predictions (issue #11)."""
from __future__ import annotations

import torch

from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg


def _tokens(rows: int, length: int = 40) -> torch.Tensor:
    tokens = torch.zeros(rows, length, dtype=torch.long)
    for row in range(rows):
        eot = 4 + (row * 7) % (length - 5)
        tokens[row, 0] = 49406
        tokens[row, 1:eot] = torch.randint(1, 49000, (eot - 1,))
        tokens[row, eot] = 49407
    return tokens


def _model(fusion: str):
    torch.manual_seed(0)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion=fusion)).eval()
    with torch.no_grad():
        for p in model.fusion.parameters():
            p.normal_(0, 0.05)  # a fusion that visibly mixes the batch
    return model


def test_wide_batch_scored_in_groups_equals_batch_16_passes():
    model = _model("official")
    images, tokens = torch.randn(21, 3, 224, 224), _tokens(21)  # a full group and a short last one
    with torch.inference_mode():
        expected = torch.cat([model.score_tensors(images[s:s + 16], tokens[s:s + 16])["probs"] for s in range(0, 21, 16)])
        got = model.score_in_groups(images, tokens, group_size=16)["probs"]
        whole = model.score_tensors(images, tokens)["probs"]
    assert got.shape == (21, 5)
    assert (got - expected).abs().max() <= 1e-6
    assert (whole - expected).abs().max() > 1e-4  # the official fusion does depend on the batch


def test_batch_independent_fusion_is_scored_in_one_call():
    model = _model("token")
    images, tokens = torch.randn(5, 3, 224, 224), _tokens(5)
    with torch.inference_mode():
        got = model.score_in_groups(images, tokens, group_size=2)["score"]
        expected = model.score_tensors(images, tokens)["score"]
    assert (got - expected).abs().max() <= 1e-6
