"""Export an AesNet run's weights for use outside training.

    python scripts/export_aesnet.py outputs/train/<run> [--checkpoint best.pt]

A pretraining run gives ``backbone.safetensors`` (the image encoder in timm / open_clip's own
layout, ``encoders.save_backbone``); a finetune or probe run gives ``scorer.safetensors`` (the
whole scorer, loadable by ``mtpg_aiaa.models.aesnet.load_scorer`` and the model registry) and
``backbone.safetensors``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from mtpg_aiaa.engine.checkpointing import load_training_state
from mtpg_aiaa.engine.tasks.aesnet.downstream import build_scorer_model
from mtpg_aiaa.models.aesnet import save_scorer
from mtpg_aiaa.models.aesnet.encoders import ImageEncoder, save_backbone


def export_run(run_dir: str | Path, checkpoint: str = "best.pt") -> list[Path]:
    """Write the run's exported files next to its checkpoints; returns their paths."""
    run_dir = Path(run_dir)
    path = run_dir / checkpoint
    if not path.is_file():
        path = run_dir / "last.pt"
    state = load_training_state(path)
    cfg = OmegaConf.create(state["config"])
    name = cfg.task.name if cfg.get("task") else None
    if name not in ("aesnet/pretrain", "aesnet/finetune", "aesnet/probe"):
        raise ValueError(f"{path} is not an AesNet run (task {name!r})")
    written = []
    if name == "aesnet/pretrain":
        spec = cfg.task.model
        encoder = ImageEncoder(spec.encoder, spec.get("image_size"))
        prefix = "backbone."
        encoder.load_state_dict({k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)})
    else:
        cfg.task.init_backbone = None
        scorer = build_scorer_model(cfg)
        scorer.load_state_dict(state["model"])
        written.append(save_scorer(scorer, run_dir / "scorer.safetensors"))
        encoder = scorer.backbone
    written.append(save_backbone(encoder, run_dir / "backbone.safetensors"))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="best.pt", help="falls back to last.pt when absent")
    args = parser.parse_args(argv)
    for path in export_run(args.run_dir, args.checkpoint):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
