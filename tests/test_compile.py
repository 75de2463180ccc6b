"""``torch.compile`` of the backbone blocks (``backbone/compiling.py``), opt-in through
``eval.compile`` and ``trainer.compile``, and ``eval.attention`` reaching the model.

The compiled path is checked against eager on the CPU where inductor works here (it needs
a C++ compiler); the settings' wiring is checked without paying for a compile.
"""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

import mtpg_aiaa.engine.trainer as trainer_module
from mtpg_aiaa.backbone.compiling import compile_blocks
from mtpg_aiaa.backbone.longclip import create_longclip
from mtpg_aiaa.engine.trainer import TrainerConfig

from helpers import ROOT


def _inductor_works() -> str | None:
    """None when inductor compiles a trivial function on this machine, else why not."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
    except Exception as error:  # noqa: BLE001 - any failure: no compiler, no triton, ...
        return f"torch.compile does not work on this machine: {type(error).__name__}: {str(error)[:200]}"
    return None


def _inputs(model):
    tokens = torch.zeros(3, 40, dtype=torch.long)
    tokens[:, 0] = 49406
    for row, eot in enumerate((9, 22, 35)):
        tokens[row, 1:eot] = torch.randint(1, 49000, (eot - 1,), generator=torch.Generator().manual_seed(row))
        tokens[row, eot] = 49407
    images = torch.randn(2, 3, model.arch.image_size, model.arch.image_size, generator=torch.Generator().manual_seed(9))
    return tokens, images


def test_compile_blocks_compiles_every_block_in_place_and_keeps_the_keys(monkeypatch):
    model = create_longclip("LongCLIP-tiny")
    keys = list(model.state_dict())
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **options: compiled.append((self, options)))
    count = compile_blocks(model, mode="max-autotune")
    blocks = [*model.visual.transformer.resblocks, *model.transformer.resblocks]
    assert count == len(blocks) == len(compiled)
    assert [block for block, _ in compiled] == blocks and all(o == {"mode": "max-autotune"} for _, o in compiled)
    assert list(model.state_dict()) == keys


@pytest.mark.slow
def test_compiled_blocks_match_eager_for_inference_and_training():
    reason = _inductor_works()
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    eager = create_longclip("LongCLIP-tiny")
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled)
    tokens, images = _inputs(eager)
    for model in (eager, compiled):
        model.eval()
    with torch.no_grad():
        for name in ("encode_text", "encode_image"):
            inputs = tokens if name == "encode_text" else images
            expected, got = getattr(eager, name)(inputs), getattr(compiled, name)(inputs)
            assert (got - expected).abs().max() <= 1e-5, name
    gradients = []
    for model in (eager, compiled):
        model.train()
        (model.encode_text(tokens).square().sum() + model.encode_image(images).square().sum()).backward()
        gradients.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name, grad in gradients[0].items():
        assert (gradients[1][name] - grad).abs().max() <= 1e-5 * max(1.0, grad.abs().max().item()), name


def test_trainer_compile_is_off_by_default_and_compiles_the_blocks_when_set(monkeypatch, tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train")
    assert cfg.trainer.compile is False and TrainerConfig().compile is False
    assert TrainerConfig.from_config({**cfg.trainer, "compile": True}, ignored=("eval_batch_size",)).compile is True
    calls = []
    monkeypatch.setattr(trainer_module, "compile_blocks", lambda model: calls.append(model))

    class Task:
        train_dataset = list(range(8))

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for flag in (False, True):
        trainer_module.Trainer(model, Task(), optimizer, None, TrainerConfig(compile=flag, batch_size=2), tmp_path,
                               None, {}, torch.device("cpu"))  # fmt: skip
    assert calls == [model]


def test_test_py_reads_eval_attention_and_eval_compile(official_ckpt, make_smoke, tmp_path, monkeypatch):
    import test as test_script

    smoke = make_smoke(6, 4)
    compiled = []
    monkeypatch.setattr(test_script, "compile_blocks", lambda model: compiled.append(model))
    modes, predictions = [], {}
    original = test_script.set_attention
    monkeypatch.setattr(test_script, "set_attention", lambda model, mode: (modes.append(mode), original(model, mode))[1])
    for name, extra in (("default", []), ("sdpa", ["eval.attention=sdpa", "eval.compile=true"])):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("test", overrides=[
                f"ckpt={official_ckpt}", f"data.csv={smoke['csv']}", f"data.image_root={smoke['image_root']}",
                "eval.num_workers=0", "eval.progress=false", "eval.n_bootstrap=0", "device=cpu", *extra,
            ])  # fmt: skip
        test_script.evaluate(cfg, tmp_path / name)
        predictions[name] = pd.read_csv(tmp_path / name / "predictions.csv")["pred_0_10"].to_numpy()
    assert modes == ["auto", "sdpa"] and len(compiled) == 1
    assert abs(predictions["sdpa"] - predictions["default"]).max() <= 1e-5 * 10
