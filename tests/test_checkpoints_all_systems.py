"""Every system's run files load with ``load_model`` as what they are, and are used as such.

Each of the eight tasks trains two steps in-process at a tiny size (the fixtures of
``test_training``/``test_pretrain``, ``test_cgiaa_entry_points`` and ``test_aesnet_tasks``);
its ``best.safetensors`` and its ``last.pt`` are then loaded with ``models.loading.load_model``
and used: a scorer scores an image, a CG-IAA expert writes a critique, an AesNet pretraining
model embeds an image. ``weights_kind`` says what each file was.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from aesnet_fakes import write_multitext_table
from helpers import compose_config, load_script, tiny_train_overrides
from mtpg_aiaa.backbone.clip import load_clip
from mtpg_aiaa.backbone.convert import CheckpointError
from mtpg_aiaa.models.aesnet import AesNetPretrainModel, AesNetScorer
from mtpg_aiaa.models.base import Scorer
from mtpg_aiaa.models.cgiaa import CritiqueExpert, CritiqueGenerator, load_gpt2_tokenizer
from mtpg_aiaa.models.cgiaa.prefix import build_release_transform
from mtpg_aiaa.models.cgiaa.scorer import CGIAAScorer
from mtpg_aiaa.models.checkpoints import read_weights_only
from mtpg_aiaa.models.loading import load_model
from mtpg_aiaa.models.mtpg import MTPGAIAA
from test_aesnet_tasks import config as aesnet_config
from test_cgiaa_entry_points import CRITIQUES, files, run as run_cgiaa  # noqa: F401 - `files` is a fixture

train = load_script("train.py").train
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def aesnet_fake(tmp_path_factory):
    return write_multitext_table(tmp_path_factory.mktemp("aesnet_all"), rows=12)


def assert_loads_as(run_dir: Path, cls: type, system: str, kind: str) -> list:
    """``best.safetensors`` and ``last.pt`` of ``run_dir`` loaded: both of class ``cls``,
    saying their system and kind, with the same tensor names (the last state and the best
    one may differ in value)."""
    best, last = load_model(run_dir / "best.safetensors"), load_model(run_dir / "last.pt")
    for model, origin in ((best, "our format"), (last, "training checkpoint")):
        assert type(model) is cls and model.system == system and model.model_kind == kind
        assert origin in model.weights_kind and system in model.weights_kind and not model.training
    assert kind in last.weights_kind and "step 2" in last.weights_kind
    assert set(best.state_dict()) == set(last.state_dict())
    recorded = read_weights_only(run_dir / "last.pt")
    assert (recorded["system"], recorded["model_kind"]) == (system, kind)
    assert recorded["model_config"] == last.config_dict()
    return [best, last]


def score_one(scorer: Scorer, image: Path, texts: dict[str, str]) -> float:
    """The scorer's own preprocessing, tokenizer and ``forward(batch)`` on one image."""
    batch = {"image": scorer.build_transform()(Image.open(image).convert("RGB"))[None]}
    if scorer.text_names:
        batch["tokens"] = scorer.tokenize({name: [texts[name]] for name in scorer.text_names})
    with torch.no_grad():
        score = scorer(batch)["score"]
    assert score.shape == (1,) and torch.isfinite(score).all()
    return float(score)


# -- MTPG-AIAA --------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_mtpg_runs_load_as_scorers(make_smoke, tmp_path, stage):
    smoke = make_smoke(8, 0)
    extra = ("stage=pretrain", "stage.val_matching_images=4") if stage == "pretrain" else ()
    train(compose_config("train", *tiny_train_overrides(smoke, tmp_path, *extra)))
    image = next(Path(smoke["image_root"]).iterdir())
    for model in assert_loads_as(tmp_path / "train" / "run", MTPGAIAA, "mtpg", "scorer"):
        assert 0.0 <= score_one(model, image, {"description": "a calm sea at dusk"}) <= 1.0


# -- CG-IAA -----------------------------------------------------------------------------
def test_cgiaa_vlap_and_score_runs_load_as_scorers(files, tmp_path):  # noqa: F811 - the imported fixture
    root, csv = files["root"], str(files["root"] / "labels.csv")
    clip = f"model.clip_weights={root / 'base_model.pt'}"
    run_cgiaa(files, tmp_path / "vlap", "cgiaa/vlap", f"task.train_pairs={root / 'pairs.csv'}",
              f"task.val_pairs={root / 'pairs.csv'}", clip, "trainer.save_every=1")  # fmt: skip
    run_cgiaa(files, tmp_path / "score", "cgiaa/score", f"task.critiques_csv={root / 'critiques.csv'}",
              f"task.train_csv={csv}", f"task.val_csv={csv}", clip, "trainer.save_every=1")  # fmt: skip
    image = files["images"] / files["names"][0]
    for task in ("vlap", "score"):
        for model in assert_loads_as(tmp_path / task / "train" / "run", CGIAAScorer, "cgiaa", "scorer"):
            score_one(model, image, CRITIQUES)
            assert model.config.clip_weights is None  # the file carries its CLIP; it names no other file


def test_cgiaa_expert_run_loads_as_an_expert_that_critiques(files, tmp_path):  # noqa: F811
    root = files["root"]
    _, run_dir = run_cgiaa(files, tmp_path, "cgiaa/expert", "attribute=color", f"task.critique_dir={root / 'critiques'}",
                           "task.image_pattern='{img_id}.png'", f"task.clip_weights={root / 'base_model.pt'}",
                           f"task.tokenizer={root / 'tokenizer'}", f"model.gpt2_weights={root / 'gpt2'}",
                           "task.max_tokens=12", "model.clip_dim=32", "model.clip_length=2",
                           "model.prefix_length=3", "model.num_layers=1", "+model.mlp_dim=128",
                           "trainer.save_every=1")  # fmt: skip
    experts = assert_loads_as(run_dir, CritiqueExpert, "cgiaa", "expert")
    clip = load_clip(root / "base_model.pt")
    tokenizer = load_gpt2_tokenizer(root / "tokenizer")
    pixels = build_release_transform(clip.arch.image_size)(Image.open(files["images"] / files["names"][0]).convert("RGB"))
    for expert in experts:
        critique = CritiqueGenerator(clip, {"color": expert}, tokenizer).critique(pixels[None], beam_size=2, max_steps=6)
        assert list(critique[0]) == ["color"] and isinstance(critique[0]["color"], str)
    with pytest.raises(CheckpointError, match="holds a cgiaa expert model, not a scorer"):
        load_model(run_dir / "best.safetensors", expect="scorer")  # test.py asks for a scorer


# -- AesNet -----------------------------------------------------------------------------
def test_aesnet_pretrain_run_loads_as_a_pretraining_model_that_embeds(aesnet_fake, tmp_path):
    train(aesnet_config("aesnet/pretrain", aesnet_fake, tmp_path, "run_name=pre", "trainer.max_steps=2"))
    image = next(Path(aesnet_fake["image_root"]).iterdir())
    for model in assert_loads_as(tmp_path / "train" / "pre", AesNetPretrainModel, "aesnet", "pretrain"):
        pixels = model.build_transform()(Image.open(image).convert("RGB"))[None]
        with torch.no_grad():
            embedded = model.embed(pixels)
        assert set(embedded) == set(model.attributes)
        assert all(torch.allclose(e.norm(dim=-1), torch.ones(1)) for e in embedded.values())


@pytest.mark.parametrize("task", ["aesnet/probe", "aesnet/finetune"])
def test_aesnet_downstream_runs_load_as_scorers(aesnet_fake, tmp_path, task):
    train(aesnet_config(task, aesnet_fake, tmp_path, "run_name=down", "trainer.max_steps=2"))
    image = next(Path(aesnet_fake["image_root"]).iterdir())
    for model in assert_loads_as(tmp_path / "train" / "down", AesNetScorer, "aesnet", "scorer"):
        score_one(model, image, {})


def test_a_file_names_one_class_per_system_and_kind():
    """The class a file's ``(system, model)`` names is unique: a second one is refused where it is defined."""
    from mtpg_aiaa.models.base import SavedModel
    from mtpg_aiaa.models.registry import list_models

    list_models()  # every system's classes defined
    assert {("mtpg", "scorer"), ("cgiaa", "scorer"), ("cgiaa", "expert"), ("aesnet", "scorer"),
            ("aesnet", "pretrain")} <= set(SavedModel._classes)  # fmt: skip
    with pytest.raises(ValueError, match="mtpg scorer is defined twice"):
        type("Impostor", (Scorer,), {"system": "mtpg"})
    assert SavedModel._classes["mtpg", "scorer"] is MTPGAIAA
