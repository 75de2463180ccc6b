"""MTPG-AIAA weight files: the authors' released layout (exact key set, strict loading,
weights-only readable) and our safetensors format (config travels with the weights),
both written atomically."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mtpg_aiaa.backbone import CheckpointError
from mtpg_aiaa.backbone.convert import strip_prefix, to_release_layout
from mtpg_aiaa.fileio import atomic_write
from mtpg_aiaa.models.mtpg.checkpoint import (
    load_model,
    load_official_checkpoint,
    official_key,
    read_model_config,
    save_model,
    save_official_checkpoint,
)
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg
from mtpg_aiaa.models.mtpg.prompts import level_prompts
from mtpg_aiaa.backbone.tokenizer import get_tokenizer

# The head layers of the released checkpoint, as listed in mtpg_official.md.
SQUARE = [
    "query_text", "key_text", "value_text", "query_image", "key_image", "value_image",
    "query_image_s", "key_image_s", "value_image_s", "query_text_s", "key_text_s", "value_text_s",
    "query_image_s_2", "key_image_s_2", "value_image_s_2", "query_text_2", "key_text_s_2", "value_text_s_2",
    "fc3", "fc4",
]  # fmt: skip
DOUBLE = ["fc1", "fc2", "mlp"]
HALF = ["exband1", "exband2"]
FFN = ["ffn.0", "ffn.2"]
HEAD_KEYS = {f"{layer}.{p}" for layer in SQUARE + DOUBLE + HALF + FFN for p in ("weight", "bias")} | {"logit_scale"}
DESCRIPTIONS = ["a cat on a mat", "a stormy sea painted in thick strokes of grey and green", "a portrait"]


def _model(seed: int = 0, **config):
    torch.manual_seed(seed)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", **config)).eval()
    with torch.no_grad():
        for parameter in model.fusion.parameters():
            parameter.normal_(std=0.1)
        model.logit_scale.fill_(2.0 + seed)
        model.backbone.positional_embedding.normal_(std=0.3)
    return model


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(7)
    return torch.randn(3, 3, 224, 224), get_tokenizer()(DESCRIPTIONS)


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("official") / "model_save.pt"
    save_official_checkpoint(model, path)
    return path


def _outputs(model, batch):
    with torch.no_grad():
        return model.score_tensors(*batch)


def test_released_layout_of_longclip_l_has_the_reference_keys_and_shapes():
    """mtpg_official.md: with Long-CLIP-L, 447 backbone keys + 55 head keys = 502, the head
    layers D->D, 2D->D, D/2->D and the ffn D->D/2->D, all with bias, D = 768."""
    with torch.device("meta"):  # shapes only, no 1.7 GB of weights
        model = build_mtpg(MTPGConfig(backbone="LongCLIP-L-14"))
    state = model.state_dict()
    backbone = to_release_layout(strip_prefix(state, "backbone."))
    head = {official_key(key): value for key, value in state.items() if not key.startswith("backbone.")}
    assert set(head) == HEAD_KEYS
    assert (len(backbone), len(head), len(backbone) + len(head)) == (447, 55, 502)
    d = 768
    shapes = {**dict.fromkeys(SQUARE, (d, d)), **dict.fromkeys(DOUBLE, (d, 2 * d)), **dict.fromkeys(HALF, (d, d // 2)),
              "ffn.0": (d // 2, d), "ffn.2": (d, d // 2)}  # fmt: skip
    for layer, (out_features, in_features) in shapes.items():
        assert head[f"{layer}.weight"].shape == (out_features, in_features), layer
        assert head[f"{layer}.bias"].shape == (out_features,), layer
    assert head["logit_scale"].numel() == 1


def test_official_layout_keys(model, official_file):
    state = torch.load(official_file, map_location="cpu", weights_only=True)
    assert isinstance(state, dict)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    backbone_keys = {f"model.{k}" for k in model.backbone.state_dict()} | {"model.positional_embedding_res"}
    assert "model.logit_scale" in backbone_keys
    assert set(state) == backbone_keys | HEAD_KEYS
    assert len(state) == len(model.backbone.state_dict()) + 1 + 55

    d = model.backbone.embed_dim
    assert state["query_text_2.weight"].shape == (d, d)
    assert state["fc1.weight"].shape == (d, 2 * d) and state["mlp.weight"].shape == (d, 2 * d)
    assert state["exband1.weight"].shape == (d, d // 2)
    assert state["ffn.0.weight"].shape == (d // 2, d) and state["ffn.2.weight"].shape == (d, d // 2)
    # The head's temperature is the top-level one; the backbone's is kept separately.
    assert torch.equal(state["logit_scale"], model.logit_scale.detach())
    assert torch.equal(state["model.logit_scale"], model.backbone.logit_scale.detach())
    assert not torch.equal(state["logit_scale"], state["model.logit_scale"])
    # Re-reading the release layout gives back exactly the one positional table used.
    pos = model.backbone.positional_embedding.detach()
    assert torch.equal(state["model.positional_embedding"][:20], pos[:20])
    assert torch.equal(state["model.positional_embedding_res"][20:], pos[20:])


def test_official_file_is_weights_only_loadable(official_file):
    # Would raise on any pickled non-tensor object.
    state = torch.load(official_file, weights_only=True)
    assert {type(v) for v in state.values()} == {torch.Tensor}


def test_official_round_trip(model, batch, official_file):
    loaded = load_official_checkpoint(official_file)
    assert not loaded.training
    assert loaded.config.fusion == "official" and loaded.config.prompts == "official"
    assert loaded.config.preprocess == "official"
    assert loaded.config.arch() == model.config.arch()
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    ours, theirs = _outputs(model, batch), _outputs(loaded, batch)
    assert torch.equal(ours["probs"], theirs["probs"])
    assert torch.equal(ours["score"], theirs["score"])
    # load_model dispatches a .pt file to the official loader
    assert torch.equal(_outputs(load_model(official_file), batch)["score"], ours["score"])


@pytest.mark.parametrize("key", ["value_image.bias", "ffn.2.weight", "logit_scale", "model.ln_final.weight"])
def test_official_missing_key(tmp_path, official_file, key):
    state = torch.load(official_file, weights_only=True)
    del state[key]
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_official_checkpoint(path)
    message = str(info.value)
    assert "broken.pt" in message
    # named as the file names it: an architecture key, or one the strict load misses
    assert f"'{key}' is missing" in message or f"missing: {key}" in message, message


@pytest.mark.parametrize("key, shape", [("fc1.weight", (64, 64)), ("exband2.weight", (64, 64)), ("fc4.bias", (32,))])
def test_official_wrong_shape(tmp_path, official_file, key, shape):
    state = torch.load(official_file, weights_only=True)
    state[key] = torch.zeros(shape)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_official_checkpoint(path)
    message = str(info.value)
    assert "wrong.pt" in message and key in message and str(shape) in message


def test_official_unexpected_key(tmp_path, official_file):
    state = torch.load(official_file, weights_only=True)
    state["extra_layer.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="extra_layer.weight"):
        load_official_checkpoint(tmp_path / "extra.pt")


def test_official_loader_rejects_other_layouts(tmp_path, model):
    torch.save(model.backbone.state_dict(), tmp_path / "backbone_only.pt")
    with pytest.raises(CheckpointError, match="backbone_only.pt"):
        load_official_checkpoint(tmp_path / "backbone_only.pt")


# -- our safetensors format --------------------------------------------------------------
def test_safetensors_round_trip_preserves_config(tmp_path, batch):
    model = _model(seed=3, prompts="clean", preprocess="clip")
    path = save_model(model, tmp_path / "run" / "model.safetensors")
    assert path.is_file()
    assert os.listdir(path.parent) == ["model.safetensors"]
    config = read_model_config(path)
    assert (config.fusion, config.prompts, config.preprocess) == ("official", "clean", "clip")
    assert config.arch() == model.config.arch()

    loaded = load_model(path)
    assert not loaded.training
    assert loaded.config.prompts == "clean" and loaded.config.preprocess == "clip"
    assert torch.equal(loaded.prompt_tokens, get_tokenizer()(level_prompts("clean")))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    ours, theirs = _outputs(model, batch), _outputs(loaded, batch)
    assert torch.equal(ours["probs"], theirs["probs"])
    assert torch.equal(ours["score"], theirs["score"])


def test_safetensors_without_metadata_fails_clearly(tmp_path, model):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="plain.safetensors") as info:
        load_model(path)
    assert "not an MTPG-AIAA model" in str(info.value)

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other), metadata={"format": "something-else", "config": json.dumps({})})
    with pytest.raises(CheckpointError, match="other.safetensors"):
        load_model(other)


def test_load_model_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        load_model(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="absent.pt"):
        load_model(tmp_path / "absent.pt")


# -- atomic writes -----------------------------------------------------------------------
def _partial_writer(tmp: str):
    with open(tmp, "wb") as handle:
        handle.write(b"half a checkp")
    raise RuntimeError("disk full")


def test_atomic_write_keeps_previous_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_write(path, lambda tmp: open(tmp, "wb").write(b"previous contents"))
    assert path.read_bytes() == b"previous contents"
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, _partial_writer)
    assert path.read_bytes() == b"previous contents"
    assert os.listdir(tmp_path) == ["ckpt.pt"]

    atomic_write(path, lambda tmp: open(tmp, "wb").write(b"new"))
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_atomic_write_failure_without_previous_file(tmp_path):
    path = tmp_path / "sub" / "fresh.pt"
    with pytest.raises(RuntimeError):
        atomic_write(path, _partial_writer)
    assert not path.exists()
    assert os.listdir(path.parent) == []


def test_failed_official_save_keeps_previous_checkpoint(tmp_path, model, monkeypatch):
    path = tmp_path / "model_save.pt"
    save_official_checkpoint(model, path)
    before = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 partial")
        raise OSError("interrupted")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="interrupted"):
        save_official_checkpoint(_model(seed=5), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model_save.pt"]
    assert torch.equal(load_official_checkpoint(path).logit_scale, model.logit_scale)
