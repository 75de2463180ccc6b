"""CG-IAA through the entry points: ``train.py task=cgiaa/{vlap,expert,score}`` on tiny random
models and generated images, ``test.py`` on the trained MAP scorer with cached critiques, and
``demo.py --system cgiaa``."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from transformers import GPT2Config, GPT2LMHeadModel

from mtpg_aiaa.backbone.longclip import LongCLIP, LongCLIPArch
from helpers import ROOT, load_script
from mtpg_aiaa.models.cgiaa import load_expert
from mtpg_aiaa.models.cgiaa.critique_data import write_critique_csv
from mtpg_aiaa.models.cgiaa.small_tokenizer import write_small_gpt2_tokenizer
from mtpg_aiaa.models.cgiaa.toy_critiques import toy_words
from mtpg_aiaa.models.loading import load_model

demo = load_script("demo.py")
evaluate = load_script("test.py").evaluate
train = load_script("train.py").train

CLIP_ARCH = LongCLIPArch(embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=1,
                         text_width=64, text_layers=1, context_length=77)  # fmt: skip
COLOURS = ["red", "navy", "gold", "grey", "teal", "pink", "olive", "white"]
CRITIQUES = {"color": "the colors are harmonious and rich.", "composition": "the composition is well balanced.",
             "dof": "the focus is soft.", "general": "an average painting overall."}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Eight images, labels, pairs, released-format critiques, the cache CSV, an OpenAI-layout
    CLIP file, a small GPT-2 tokenizer and a tiny GPT-2 folder."""
    root = tmp_path_factory.mktemp("cgiaa")
    images = root / "images"
    images.mkdir()
    names = []
    for i, colour in enumerate(COLOURS):
        names.append(f"{i}.png")
        Image.new("RGB", (36, 28), colour).save(images / names[-1])
    pd.DataFrame({"image": names, "score": [i / 7 for i in range(8)]}).to_csv(root / "labels.csv", index=False)
    pd.DataFrame({"image": names, "critique": [CRITIQUES[a] for a in CRITIQUES] * 2}).to_csv(root / "pairs.csv", index=False)
    for split in ("train", "val"):
        entries = [{"id": i, "img_id": str(i), "caption": CRITIQUES["color"]} for i in range(8)]
        (root / "critiques" / split).mkdir(parents=True)
        (root / "critiques" / split / "color.json").write_text(json.dumps(entries))
    write_critique_csv([{"image": n, **CRITIQUES} for n in names], root / "critiques.csv")
    torch.manual_seed(0)
    torch.save({f"clip_model.{k}": v for k, v in LongCLIP(CLIP_ARCH).state_dict().items()}, root / "base_model.pt")
    tokenizer = write_small_gpt2_tokenizer(root / "tokenizer", toy_words())
    vocab = len(json.loads((tokenizer / "vocab.json").read_text()))
    GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=64, n_layer=1, n_head=1, n_inner=128)).save_pretrained(root / "gpt2")
    return {"root": root, "images": images, "names": names}


def run(files: dict, out: Path, task: str, *overrides: str) -> tuple[dict, Path]:
    root = files["root"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"task={task}", "debug=fast", "trainer.batch_size=4", "sched.warmup_steps=1",
            f"paths.output_root={out}", "run_name=run", f"task.image_root={files['images']}", *overrides,
        ])  # fmt: skip
    return train(cfg), out / "train" / "run"


def test_mtpg_default_task_is_unchanged():
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["stage=pretrain"])
    assert cfg.task._target_ == "mtpg_aiaa.engine.tasks.mtpg.pretrain.build_pretrain_task"
    assert cfg.model._target_ == "mtpg_aiaa.models.mtpg.build_mtpg_model"


@pytest.mark.slow  # ~7 s on the shared 2-core machine
def test_train_vlap(files, tmp_path):
    root = files["root"]
    metrics, run_dir = run(files, tmp_path, "cgiaa/vlap", f"task.train_pairs={root / 'pairs.csv'}",
                           f"task.val_pairs={root / 'pairs.csv'}", f"model.clip_weights={root / 'base_model.pt'}")  # fmt: skip
    assert {"val/i2t_r1", "val/neg_loss"} <= set(metrics) and (run_dir / "last.pt").is_file()
    assert load_model(run_dir / "best.safetensors").system == "cgiaa"


def test_train_expert_writes_a_released_layout_expert(files, tmp_path):
    root = files["root"]
    metrics, run_dir = run(files, tmp_path, "cgiaa/expert", "attribute=color", f"task.critique_dir={root / 'critiques'}",
                           "task.image_pattern='{img_id}.png'", f"task.clip_weights={root / 'base_model.pt'}",
                           f"task.tokenizer={root / 'tokenizer'}", f"model.gpt2_weights={root / 'gpt2'}", "task.max_tokens=12",
                           "model.clip_dim=32", "model.clip_length=2", "model.prefix_length=3",
                           "model.num_layers=1", "+model.mlp_dim=128")  # fmt: skip
    assert metrics["val/neg_loss"] < 0
    expert = load_expert(run_dir / "best.safetensors")
    gpt2 = GPT2LMHeadModel.from_pretrained(str(root / "gpt2"))
    # GPT-2 frozen (the default recipe): it leaves training exactly as it came in
    assert all(torch.equal(v, gpt2.state_dict()[k]) for k, v in expert.gpt.state_dict().items())


@pytest.mark.slow  # ~10 s on the shared 2-core machine
def test_train_score_then_test_py_and_demo(files, tmp_path, capsys):
    root = files["root"]
    csv = str(root / "labels.csv")
    metrics, run_dir = run(files, tmp_path, "cgiaa/score", f"task.critiques_csv={root / 'critiques.csv'}",
                           f"task.train_csv={csv}", f"task.val_csv={csv}", f"model.clip_weights={root / 'base_model.pt'}")  # fmt: skip
    assert {"val/srcc", "val/plcc"} <= set(metrics)
    for ckpt in ("best.safetensors", "last.pt"):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("test", overrides=[f"ckpt={run_dir / ckpt}", f"critiques={root / 'critiques.csv'}",
                                             f"data.csv={csv}", f"data.image_root={files['images']}", "data.score_scale=1",
                                             "eval.n_bootstrap=0", "eval.num_workers=0", "eval.progress=false"])  # fmt: skip
        result = evaluate(cfg, tmp_path / ckpt)
        assert result["system"] == "cgiaa" and result["n_skipped"] == 0
    scores = pd.read_csv(tmp_path / "best.safetensors" / "predictions.csv")
    scorer = load_model(run_dir / "best.safetensors")
    assert len(scores) == 8
    images = [files["images"] / n for n in files["names"][:2]]
    capsys.readouterr()
    code = demo.main([*map(str, images), "--system", "cgiaa", "--ckpt", str(run_dir / "best.safetensors"),
                      "--critiques", str(root / "critiques.csv"), "--device", "cpu", "--json"])  # fmt: skip
    shown = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["texts"] for r in shown["results"]] == [CRITIQUES, CRITIQUES]
    from mtpg_aiaa.models.cgiaa.explain import score_with_critiques

    again = score_with_critiques(scorer, images, [CRITIQUES] * 2, torch.device("cpu"))
    assert [r["pred"] for r in shown["results"]] == [r["score"] for r in again]
    assert demo.main([str(images[0]), "--system", "cgiaa", "--ckpt", str(run_dir / "best.safetensors"),
                      "--critiques", str(root / "labels.csv")]) == 2  # not a critique cache: a one-line error
