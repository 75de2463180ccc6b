"""CG-IAA training: the three objectives, frozen parts that get no gradient, the three tasks
stepping on tiny random models and generated images, the MAP scorer through the registry, and
the critique cache equal to fresh critiques."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mtpg_aiaa.backbone.longclip import LongCLIP, LongCLIPArch
from mtpg_aiaa.data import BadInputError
from mtpg_aiaa.engine.tasks import get_task_builder
from mtpg_aiaa.engine.tasks.cgiaa.expert import ExpertTask, build_datasets, encode_captions
from mtpg_aiaa.engine.tasks.cgiaa.score import ScoreTask, join_critiques
from mtpg_aiaa.engine.tasks.cgiaa.vlap import VLAPTask
from mtpg_aiaa.models.base import scorer_metadata
from mtpg_aiaa.models.cgiaa import CritiqueExpert, CritiqueGenerator, GPT2Sizes, MapperConfig, load_gpt2_tokenizer
from mtpg_aiaa.models.cgiaa.critique_data import add_period, read_critique_csv, read_critique_json, write_critique_csv
from mtpg_aiaa.models.cgiaa.losses import critique_token_loss, symmetric_infonce
from mtpg_aiaa.models.cgiaa.small_tokenizer import write_small_gpt2_tokenizer
from mtpg_aiaa.models.registry import create_model, get_model_entry

WORDS = ["the", "colors", "are", "warm", "cold", "dull", "vivid", "composition", "is", "balanced"]
CLIP_ARCH = LongCLIPArch(embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=1,
                         text_width=64, text_layers=1, context_length=77)  # fmt: skip
SCORER = dict(clip=CLIP_ARCH.to_dict())


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def images(tmp_path):
    names = []
    for i, colour in enumerate(["red", "navy", "gold", "grey", "teal", "pink"]):
        names.append(f"{i}.png")
        Image.new("RGB", (36, 28), colour).save(tmp_path / names[-1])
    return tmp_path, names


def tiny_expert(seed: int = 0) -> CritiqueExpert:
    torch.manual_seed(seed)
    return CritiqueExpert(GPT2Sizes(vocab_size=128, n_positions=96, n_embd=64, n_layer=1, n_inner=128),
                          MapperConfig(clip_dim=32, embed_dim=64, clip_length=2, prefix_length=3, num_layers=1, mlp_dim=128))  # fmt: skip


# --- objectives --------------------------------------------------------------------------------


def test_symmetric_infonce_by_hand():
    torch.manual_seed(0)
    image, text = torch.randn(4, 8), torch.randn(4, 8)
    logits = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T / 0.07
    by_hand = 0.0
    for i in range(4):
        by_hand += -logits[i].log_softmax(0)[i] / 8 - logits[:, i].log_softmax(0)[i] / 8
    assert float(symmetric_infonce(image, text)) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(symmetric_infonce(text * 3, text)) < float(symmetric_infonce(text.roll(1, 0), text))


def test_token_loss_masks_padding_and_the_release_quirk_drops_token_zero():
    torch.manual_seed(0)
    logits = torch.randn(1, 3 + 4, 10)
    tokens = torch.tensor([[5, 0, 7, 0]])  # "x ! y" then one pad: the "!" (id 0) is a real token
    mask = torch.tensor([[1, 1, 1, 0]])
    predicted = logits[0, 2:6].log_softmax(-1)
    masked = -(predicted[0, 5] + predicted[1, 0] + predicted[2, 7]) / 3
    quirk = -(predicted[0, 5] + predicted[2, 7]) / 2
    assert float(critique_token_loss(logits, tokens, 3, mask)) == pytest.approx(float(masked), rel=1e-5)
    assert float(critique_token_loss(logits, tokens, 3, released_padding=True)) == pytest.approx(float(quirk), rel=1e-5)


def test_captions_get_the_released_period_and_length(tmp_path):
    assert [add_period(c) for c in ["warm colors", "warm colors .", " dull. "]] == ["warm colors.", "warm colors.", "dull."]
    tokenizer = load_gpt2_tokenizer(write_small_gpt2_tokenizer(tmp_path / "tok", WORDS))
    tokens, mask = encode_captions(tokenizer, ["the colors are warm", "vivid " * 30], max_tokens=6)
    assert tokens[0].tolist()[:5] == tokenizer.encode("the colors are warm.") and mask[0].tolist() == [1] * 5 + [0]
    assert mask[1].sum() == 6 and tokens.shape == (2, 6)


def test_critique_files_name_bad_rows(tmp_path):
    (tmp_path / "color.json").write_text('[{"id": 0, "img_id": "1", "caption": "warm"}, {"id": 1, "caption": "x"}]')
    with pytest.raises(BadInputError, match="color.json: entry 1"):
        read_critique_json(tmp_path / "color.json")
    table = pd.DataFrame({"image": ["a.png", "b.png", "a.png"], "color": ["warm", "", "x"], "composition": ["x"] * 3,
                          "dof": ["x"] * 3, "general": ["y"] * 3})  # fmt: skip
    table.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(BadInputError, match="c.csv: line 4: image 'a.png' repeated"):
        read_critique_csv(tmp_path / "c.csv")
    table.drop(columns="dof").iloc[:2].to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(BadInputError, match="missing column.*dof"):
        read_critique_csv(tmp_path / "c.csv")


# --- expert training ---------------------------------------------------------------------------


def test_expert_task_trains_only_the_mapper(tmp_path, images):
    root, names = images
    tokenizer = load_gpt2_tokenizer(write_small_gpt2_tokenizer(tmp_path / "tok", WORDS))
    torch.manual_seed(0)
    clip = LongCLIP(CLIP_ARCH).eval().requires_grad_(False)
    critiques = pd.DataFrame({"img_id": [n[0] for n in names] * 2,
                              "caption": ["the colors are warm", "the colors are cold"] * len(names)})  # fmt: skip
    data = build_datasets(critiques, "{img_id}.png", clip, root, tokenizer, 8, torch.device("cpu"))
    assert data.prefixes.shape == (len(names), 32) and torch.allclose(data.prefixes.norm(dim=-1), torch.ones(len(names)))
    expert = tiny_expert().freeze_gpt()
    task = ExpertTask(data, data)
    expert.train()
    assert not expert.gpt.training and expert.clip_project.training
    batch = task.collate([data[i] for i in range(len(data))])
    optimizer = torch.optim.AdamW([p for p in expert.parameters() if p.requires_grad], lr=1e-2)
    gpt_before = {k: v.clone() for k, v in expert.gpt.state_dict().items()}
    losses = []
    for _ in range(5):
        loss = task.training_step(expert, batch, torch.device("cpu"))["loss"]
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in expert.gpt.parameters())
        assert all(p.grad is not None for p in expert.clip_project.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(gpt_before[k], v) for k, v in expert.gpt.state_dict().items())
    assert math.isfinite(task.validate(expert, torch.device("cpu"))["val/loss"])


# --- VLAP and MAP ------------------------------------------------------------------------------


def test_vlap_task_steps_and_reports_recall(images):
    root, names = images
    scorer = create_model("cgiaa", **SCORER)
    pairs = pd.DataFrame({"image": names, "critique": [f"the colors are {w}" for w in ["warm", "cold", "dull", "vivid", "warm", "cold"]]})
    task = VLAPTask(scorer, pairs, pairs, root, eval_batch_size=4)
    batch = task.collate([task.train_dataset[i] for i in range(4)])
    loss = task.training_step(scorer, batch, torch.device("cpu"))["loss"]
    loss.backward()
    assert scorer.clip.visual.conv1.weight.grad is not None and scorer.clip.token_embedding.weight.grad is not None
    metrics = task.validate(scorer, torch.device("cpu"))
    assert 0 <= metrics["val/i2t_r1"] <= 1 and math.isfinite(metrics["val/loss"])


@pytest.mark.parametrize("bins", [0, 10])
def test_score_task_and_registry_round_trip(tmp_path, images, bins):
    root, names = images
    scorer = create_model("cgiaa", bins=bins, freeze_image_encoder=True, **SCORER)
    critiques = pd.DataFrame({"image": names, **{a: [f"the {a} is {w}" for w in WORDS[:6]] for a in scorer.text_names}})
    labels = pd.DataFrame({"image": names, "score": [0.1, 0.9, 0.4, 0.6, 0.2, 0.8]})
    if bins:
        for k in range(1, 11):
            labels[f"count_{k}"] = [k % 3 + i for i in range(len(names))]
    with pytest.raises(BadInputError, match="no critiques for image '0.png'"):
        join_critiques(labels, critiques.iloc[1:], "train.csv")
    table = join_critiques(labels, critiques, "train.csv")
    task = ScoreTask(scorer, table, table, root)
    batch = task.collate([task.train_dataset[i] for i in range(4)])
    assert ("distribution" in batch["labels"]) == bool(bins)
    loss = task.training_step(scorer, batch, torch.device("cpu"))["loss"]
    loss.backward()
    assert scorer.head.weight.grad is not None and scorer.clip.token_embedding.weight.grad is not None
    assert all(p.grad is None for p in scorer.clip.visual.parameters())  # frozen image tower
    assert set(task.validate(scorer, torch.device("cpu"))) == {"val/srcc", "val/plcc"}

    from safetensors.torch import save_file

    save_file(scorer.state_dict(), tmp_path / "s.safetensors", metadata=scorer_metadata(scorer))
    entry = get_model_entry("cgiaa")
    metadata = {k: str(v) for k, v in scorer_metadata(scorer).items()}
    assert entry.recognizes(set(scorer.state_dict()), metadata)
    again = entry.load(tmp_path / "s.safetensors", metadata)
    inputs = {"image": batch["image"], "tokens": batch["tokens"]}
    torch.testing.assert_close(again(inputs)["score"], scorer.eval()(inputs)["score"])


def test_tasks_are_registered():
    for name in ("cgiaa/vlap", "cgiaa/expert", "cgiaa/score"):
        assert callable(get_task_builder(name))


def test_cached_critiques_equal_fresh_ones(tmp_path, images):
    root, names = images
    tokenizer = load_gpt2_tokenizer(write_small_gpt2_tokenizer(tmp_path / "tok", WORDS))
    torch.manual_seed(1)
    experts = {}
    for seed, name in enumerate(("color", "composition", "dof", "general")):
        experts[name] = tiny_expert(seed)
    generator = CritiqueGenerator(LongCLIP(CLIP_ARCH), experts, tokenizer).eval()
    from mtpg_aiaa.models.cgiaa.prefix import build_release_transform

    transform = build_release_transform(32)
    pixels = torch.stack([transform(Image.open(root / n).convert("RGB")) for n in names[:3]])
    fresh = generator.critique(pixels, max_steps=5, batch_size=2)
    write_critique_csv([{"image": n, **row} for n, row in zip(names, fresh)], tmp_path / "critiques.csv")
    cached = read_critique_csv(tmp_path / "critiques.csv")
    assert cached.drop(columns="image").to_dict("records") == generator.critique(pixels, max_steps=5, literal=True)


def test_task_configs_name_their_builders_and_buildable_models():
    from pathlib import Path

    from hydra.utils import get_method
    from omegaconf import OmegaConf

    from mtpg_aiaa.engine.builders import build_training_model

    configs = Path(__file__).resolve().parents[1] / "configs"
    tasks = {path.stem: OmegaConf.load(path) for path in sorted((configs / "task" / "cgiaa").glob("*.yaml"))}
    assert set(tasks) == {"vlap", "expert", "score"}
    for stem, cfg in tasks.items():
        assert get_method(cfg.task._target_) is get_task_builder(f"cgiaa/{stem}")
    models = {path.stem: OmegaConf.load(path) for path in sorted((configs / "model" / "cgiaa").glob("*.yaml"))}
    scorer = build_training_model(OmegaConf.merge(models["scorer"], {"clip": "LongCLIP-tiny", "bins": 10}))
    assert scorer.system == "cgiaa" and scorer.head.out_features == 10
    with torch.device("meta"):  # GPT-2 small + the released mapper, without allocating them
        expert = build_training_model(models["expert"])
    assert expert.mapper_config.prefix_length == 40 and expert.gpt_frozen
    assert not any(p.requires_grad for p in expert.gpt.parameters())


def test_scorer_starts_from_released_clip_weights(tmp_path):
    torch.manual_seed(5)
    clip = LongCLIP(CLIP_ARCH)
    torch.save({f"clip_model.{k}": v for k, v in clip.state_dict().items()}, tmp_path / "base_model.pt")
    scorer = create_model("cgiaa", clip_weights=str(tmp_path / "base_model.pt"))
    assert all(torch.equal(scorer.clip.state_dict()[k], v) for k, v in clip.state_dict().items())
    assert '"clip_weights": null' in scorer.metadata()["config"]  # rebuilt from its own tensors


def test_toy_critiques_follow_the_factors_and_use_released_formats(tmp_path):
    from mtpg_aiaa.models.cgiaa.toy_critiques import toy_critiques, toy_words, write_toy_critiques

    low = toy_critiques({"harmony": 0.1, "balance": 0.1, "sharpness": 0.1, "score": 4.0, "heavy_side": "right"})
    high = toy_critiques({"harmony": 0.9, "balance": 0.9, "sharpness": 0.9, "score": 6.0, "heavy_side": "right"})
    assert "clash" in low["color"] and "right side" in low["composition"] and "blurry" in low["dof"]
    assert "harmonious" in high["color"] and "balanced" in high["composition"] and "strong" in high["general"]
    factors = pd.DataFrame({"image": ["images/00000.jpg", "images/00001.jpg", "images/00002.jpg"],
                            "split": ["train", "train", "test"], "harmony": [0.1, 0.5, 0.9], "balance": [0.9, 0.2, 0.5],
                            "sharpness": [0.4, 0.8, 0.1], "score": [4.0, 5.0, 6.0], "heavy_side": ["left"] * 3})  # fmt: skip
    factors.to_csv(tmp_path / "factors.csv", index=False)
    written = write_toy_critiques(tmp_path / "factors.csv", tmp_path / "critiques")
    colour = read_critique_json(written["train/color"])
    assert list(colour["img_id"]) == ["00000", "00001"] and "clash" in colour["caption"][0]
    cache = read_critique_csv(written["test_csv"])
    assert cache.to_dict("records") == [{"image": "images/00002.jpg", **toy_critiques(factors.iloc[2])}]
    tokenizer = load_gpt2_tokenizer(write_small_gpt2_tokenizer(tmp_path / "tok", toy_words()))
    ids = tokenizer.encode(low["composition"])
    assert len(ids) == len(low["composition"].split()) + 1  # one token per word, then "."
