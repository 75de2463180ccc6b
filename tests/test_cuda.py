"""Every CUDA code path, on a GPU when there is one (``pytest -m cuda``); skipped without.

The authors' fp16 test protocol against fp32 on the CPU, autocast training steps of both
stages (bf16 and fp16), training on the feature cache and the cache held on the GPU, JPEGs
decoded on the GPU (nvJPEG), the fused attention (SDPA on the flash kernel), DDP over NCCL
with one process (last), and ``demo.py``. Tiny models; training and the demo run in this process (``train.train``,
``demo.main``) so only the DDP test pays a second interpreter and CUDA start-up.
Run as ``pytest -x -q --durations=10 -p no:cacheprovider -m cuda tests/test_cuda.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from helpers import load_script
from mtpg_aiaa.models.mtpg.checkpoint import load_model, save_official_checkpoint
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg

ROOT = Path(__file__).resolve().parents[1]
write_smoke_data = load_script("scripts/make_smoke_data.py").write_smoke_data

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    return write_smoke_data(tmp_path_factory.mktemp("smoke"), num_images=12, seed=5)


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny"))
    with torch.no_grad():
        for p in model.fusion.parameters():
            p.normal_(0, 0.05)
    return save_official_checkpoint(model, tmp_path_factory.mktemp("official") / "model_save.pt")


def run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def train_here(overrides: list[str]) -> None:
    """``train.py`` with ``overrides``, in this process (no interpreter or CUDA start-up)."""
    train_module = load_script("train.py")  # by path: the repository root need not be on sys.path
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    train_module.train(cfg)


def train_overrides(smoke: dict, out: Path, stage: str, *extra: str) -> list[str]:
    per_stage = ["stage.val_matching_images=0"] if stage == "pretrain" else []
    return [
        f"stage={stage}", "model=tiny", "data=csv", f"data.train_csv={smoke['csv']}", f"data.val_csv={smoke['csv']}",
        f"data.image_root={smoke['image_root']}", "debug=fast", "trainer.batch_size=4", "trainer.max_steps=2",
        "trainer.num_workers=0", "device=cuda", f"paths.output_root={out}", "run_name=run", *per_stage, *extra,
    ]  # fmt: skip


def test_official_fp16_protocol_matches_fp32(official_ckpt, smoke, tmp_path):
    evaluate = load_script("test.py").evaluate  # `from test import` would find Python's own test package

    predictions = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "auto")):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("test", overrides=[
                f"ckpt={official_ckpt}", f"data.csv={smoke['csv']}", f"data.image_root={smoke['image_root']}",
                "eval.num_workers=2", "eval.progress=false", "eval.n_bootstrap=20", f"device={device}",
                f"eval.precision={precision}",
            ])  # fmt: skip
        metrics = evaluate(cfg, tmp_path / device)
        predictions[device] = pd.read_csv(tmp_path / device / "predictions.csv")["pred_0_10"].to_numpy()
        assert metrics["backbone_precision"] == ("fp16" if device == "cuda" else "fp32")
    assert abs(predictions["cuda"] - predictions["cpu"]).max() / 10 <= 2e-3


def test_fp16_backbone_on_cuda_is_half_and_matches_fp32(official_ckpt):
    images = torch.randn(4, 3, 224, 224)
    tokens = torch.zeros(4, 30, dtype=torch.long)
    tokens[:, :10] = torch.randint(1, 49000, (4, 10))
    tokens[:, 10] = 49407
    reference = load_model(official_ckpt, backbone_precision="fp32")
    half = load_model(official_ckpt, device="cuda", backbone_precision="fp16")
    assert half.backbone.visual.conv1.weight.dtype == torch.float16
    with torch.inference_mode():
        expected = reference.score_tensors(images, tokens)["score"]
        got = half(images.cuda(), tokens.cuda())["score"].cpu()
    assert (got - expected).abs().max() <= 1e-3


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_training_steps(smoke, tmp_path, stage, precision):
    extra = ["model.freeze=full"] if stage == "finetune" else []
    train_here(train_overrides(smoke, tmp_path, stage, f"trainer.precision={precision}", *extra))
    assert any(tmp_path.rglob("last.pt")), sorted(tmp_path.rglob("*"))


def test_training_on_the_feature_cache(smoke, tmp_path):
    train_here(train_overrides(smoke, tmp_path, "finetune", "model.freeze=frozen",
                               "stage.feature_cache.enabled=true", f"paths.cache_dir={tmp_path / 'cache'}"))  # fmt: skip
    assert any((tmp_path / "cache").rglob("*")), "no feature cache was written"


def test_demo_on_cuda(smoke, capsys):
    demo = load_script("demo.py")
    images = sorted(Path(smoke["image_root"]).glob("*.jpg"))[:2]
    code = demo.main([*map(str, images), "--ckpt", str(smoke["ckpt"]), "--device", "cuda",
                      "--desc1", "a calm landscape", "--desc2", "a bright abstract", "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["results"]) == 2
    assert all(0 <= row["score"] <= 1 for row in report["results"])


def test_description_features_on_cuda_match_the_grouped_cpu_path():
    from mtpg_aiaa.backbone.longclip import encode_text_by_length

    torch.manual_seed(0)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny")).eval()
    tokens = torch.zeros(9, 40, dtype=torch.long)
    for row in range(9):
        tokens[row, : 5 + 3 * row] = torch.randint(1, 49000, (5 + 3 * row,))
        tokens[row, 5 + 3 * row] = 49407
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(encode_text_by_length(model.backbone, tokens), dim=-1)
        got = model.cuda().encode_texts(tokens.cuda()).cpu()
    assert (got - expected).abs().max() <= 1e-4


def test_adamw_is_fused_on_cuda():
    from mtpg_aiaa.engine.optim import build_optimizer

    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny")).cuda()
    optimizer = build_optimizer(model, backbone_lr=1e-5, head_lr=1e-4)
    assert optimizer.defaults["fused"] is True


def test_fused_attention_is_the_default_on_cuda_matches_the_module_path_and_runs_on_flash(monkeypatch):
    """``attention=auto`` takes one SDPA call per block on CUDA (the text tower with
    ``is_causal``); fp32 outputs match open_clip's MultiheadAttention path, and in bf16 both
    towers run with SDPA restricted to the flash kernel (the float mask could not)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import mtpg_aiaa.backbone.attention as attention
    from mtpg_aiaa.backbone.attention import attention_as

    torch.manual_seed(0)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny")).cuda().eval()
    backbone = model.backbone
    tokens = torch.zeros(4, 248, dtype=torch.long)
    tokens[:, 0] = 49406
    for row, eot in enumerate((5, 17, 40, 90)):
        tokens[row, 1:eot] = torch.randint(1, 49000, (eot - 1,))
        tokens[row, eot] = 49407
    tokens, images = tokens.cuda(), torch.randn(4, 3, 224, 224, device="cuda")
    calls = []
    original = attention.fused_self_attention
    monkeypatch.setattr(attention, "fused_self_attention",
                        lambda attn, x, is_causal: (calls.append(is_causal), original(attn, x, is_causal))[1])
    with torch.inference_mode():
        fused = (backbone.encode_text(tokens), backbone.encode_image(images), model.score_tensors(images, tokens)["score"])
    assert backbone.attention == "auto" and True in calls and False in calls
    with torch.inference_mode(), attention_as(model, "module"):
        release = (backbone.encode_text(tokens), backbone.encode_image(images), model.score_tensors(images, tokens)["score"])
    for got, expected in zip(fused, release):
        assert (got - expected).abs().max() <= 1e-4 * max(1.0, expected.abs().max().item())
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        text, image = backbone.encode_text(tokens), backbone.encode_image(images)
    assert (text.float() - fused[0]).abs().max() <= 5e-2 * fused[0].abs().max()
    assert (image.float() - fused[1]).abs().max() <= 5e-2 * fused[1].abs().max()


def test_jpegs_decoded_on_cuda_match_the_pil_path(tmp_path):
    """``eval.decode=device``: nvJPEG in one batch and the resize on the GPU, against PIL in
    the workers. nvJPEG rounds its IDCT (and may upsample chroma) otherwise than libjpeg:
    a few levels of 255 at most after the antialiased squash to 224 px. A 50,000-px panorama,
    past CUDA's antialiasing limit, is resized on the CPU; the last file is a PNG (PIL)."""
    from test_device_decoding import SIZES, _paintings, decoded_beside_pil

    smoke = _paintings(tmp_path, sizes=((640, 480), (50000, 96), *SIZES))
    _, _, levels = decoded_beside_pil(smoke, torch.device("cuda"))
    per_image = [(round(row.max().item(), 2), round(row.mean().item(), 3)) for row in levels]
    assert levels.max() <= 8 and levels.mean() <= 1.0, f"max and mean |diff| in levels per image: {per_image}"


def test_feature_cache_held_on_cuda_serves_the_file_path_batches(tmp_path):
    """``stage.feature_cache.on_device=auto`` holds the cached split on the GPU (pinned index,
    one gather per feature); its batches equal the file-per-sample path's."""
    from test_feature_table import assert_table_serves_the_file_batches, task

    smoke = write_smoke_data(tmp_path / "smoke", num_images=6, seed=4)
    table = task(smoke, tmp_path / "cache", on_device="auto", device="cuda").train_dataset
    files = task(smoke, tmp_path / "cache", on_device=False, device="cuda").train_dataset
    assert_table_serves_the_file_batches(table, files, "cuda")


def test_ddp_over_nccl_with_one_process(smoke, tmp_path):
    """Last in the file: the one test that starts another interpreter (and may wait on NCCL).
    torchrun's one process joins an NCCL group and trains through DistributedDataParallel."""
    result = run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "train.py",
                 *train_overrides(smoke, tmp_path, "finetune", "model.freeze=full"), timeout=75)  # fmt: skip
    log = result.stdout + result.stderr
    assert "joined the nccl process group" in log, log[-3000:]
    assert "DistributedDataParallel over 1 process" in log, log[-3000:]
    assert any(tmp_path.rglob("last.pt")), sorted(tmp_path.rglob("*"))
