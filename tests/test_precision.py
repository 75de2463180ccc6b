"""The authors' fp16 backbone on CPU: LayerNorms compute in fp32, and no op mixes dtypes
the way CUDA refuses (``expected scalar type Half but found Float``)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtpg_aiaa.backbone.convert import cast_like_upstream
from mtpg_aiaa.backbone.longclip import LayerNormFp32, create_longclip
from mtpg_aiaa.models.mtpg.checkpoint import load_model, save_official_checkpoint
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg


def _tokens(rows: int = 3, length: int = 24) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 49000, (rows, length), generator=generator)
    for row, eot in enumerate(range(length - rows, length)):
        tokens[row, eot], tokens[row, eot + 1 :] = 49407, 0
    return tokens


@pytest.fixture
def strict_layer_norm(monkeypatch):
    """``F.layer_norm`` with CUDA's rule on CPU: input, weight and bias share one dtype."""
    original = F.layer_norm
    calls = []

    def checked(x, shape, weight=None, bias=None, eps=1e-5):
        for name, tensor in (("weight", weight), ("bias", bias)):
            if tensor is not None and tensor.dtype != x.dtype:
                raise RuntimeError(f"layer_norm: input {x.dtype} but {name} {tensor.dtype}")
        calls.append(x.dtype)
        return original(x, shape, weight, bias, eps)

    monkeypatch.setattr(F, "layer_norm", checked)
    return calls


def test_every_layer_norm_of_a_cast_backbone_computes_in_fp32():
    model = cast_like_upstream(create_longclip("LongCLIP-tiny"))
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(isinstance(m, LayerNormFp32) for m in norms)
    x = torch.randn(2, 5, model.arch.text_width).half()
    for norm in norms:
        with torch.no_grad():
            norm.weight.normal_(1, 0.1)
            norm.bias.normal_(0, 0.1)
        expected = F.layer_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)
        out = norm(x)
        assert out.dtype == torch.float16
        assert torch.equal(out, expected.half())


def test_fp32_layer_norms_are_the_plain_ones_bit_for_bit():
    norm = nn.LayerNorm(16)
    with torch.no_grad():
        norm.weight.normal_(1, 0.1)
    x = torch.randn(4, 16)
    fp32 = LayerNormFp32(16)
    fp32.load_state_dict(norm.state_dict())
    assert torch.equal(fp32(x), norm(x))


def test_cast_backbone_runs_under_cudas_dtype_rules_and_matches_fp32(strict_layer_norm):
    torch.manual_seed(0)
    model = create_longclip("LongCLIP-tiny").eval()
    images, tokens = torch.randn(2, 3, 224, 224), _tokens()
    with torch.inference_mode():
        reference = (model.encode_image(images), model.encode_text(tokens), model.encode_image_with_layer_statistics(images)[2])
        cast_like_upstream(model)
        strict_layer_norm.clear()
        half = (model.encode_image(images.half()), model.encode_text(tokens),
                model.encode_image_with_layer_statistics(images.half())[2])  # fmt: skip
        model.encode_text_with_layer_statistics(tokens)
    assert strict_layer_norm and set(strict_layer_norm) == {torch.float32}  # every norm computed in fp32
    for ref, out in zip(reference, half):
        assert out.float().sub(ref).abs().max() <= 2e-2 * ref.abs().max()


def test_released_layout_fp16_protocol_matches_fp32(tmp_path, strict_layer_norm):
    torch.manual_seed(3)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny"))
    with torch.no_grad():
        for p in model.fusion.parameters():
            p.normal_(0, 0.05)
    path = save_official_checkpoint(model, tmp_path / "model_save.pt")
    images, tokens = torch.randn(4, 3, 224, 224), _tokens(4)
    scores = {}
    for precision in ("fp32", "fp16"):
        loaded = load_model(path, backbone_precision=precision)
        with torch.inference_mode():
            scores[precision] = loaded.score_tensors(images, tokens)["score"]
    assert scores["fp16"].dtype == torch.float32
    assert (scores["fp16"] - scores["fp32"]).abs().max() <= 1e-3
