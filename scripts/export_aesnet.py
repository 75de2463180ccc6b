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

from mtpg_aiaa.models.aesnet import AesNetScorer, AesNetScorerConfig, save_scorer
from mtpg_aiaa.models.aesnet.encoders import ImageEncoder, save_backbone
from mtpg_aiaa.engine.checkpointing import load_training_state
from mtpg_aiaa.engine.freezing import FREEZE_KEYS


RUN_KINDS = {"aesnet.pretrain.build_pretrain_task": "pretrain", "aesnet.downstream.build_score_task": "scorer"}
# run configs written before the per-system model groups: the task's name, its model under task.model
EARLIER_RUN_KINDS = {"aesnet/pretrain": "pretrain", "aesnet/finetune": "scorer", "aesnet/probe": "scorer"}


def run_kind(config: dict) -> str | None:
    """``pretrain`` or ``scorer`` for an AesNet run's recorded config (its task ``_target_``), else None."""
    task = config.get("task") or {}
    target = str(task.get("_target_", ""))
    kind = next((kind for suffix, kind in RUN_KINDS.items() if target.endswith(suffix)), None)
    return kind or EARLIER_RUN_KINDS.get(task.get("name"))


def model_spec(config: dict) -> tuple[dict, bool]:
    """The recorded model keys (no ``_target_``, no freezing keys) and whether the encoder was frozen."""
    task = config.get("task") or {}
    if task.get("name") in EARLIER_RUN_KINDS:
        model, frozen = dict(task.get("model") or {}), bool(task.get("frozen_backbone"))
    else:
        model = dict(config.get("model") or {})
        frozen = model.get("freeze") == "frozen"
    return {k: v for k, v in model.items() if not k.startswith("_") and k not in FREEZE_KEYS}, frozen


def export_run(run_dir: str | Path, checkpoint: str = "best.pt") -> list[Path]:
    """Write the run's exported files next to its checkpoints; returns their paths."""
    run_dir = Path(run_dir)
    path = run_dir / checkpoint
    if not path.is_file():
        path = run_dir / "last.pt"
    state = load_training_state(path)
    config = state["config"]
    kind = run_kind(config)
    if kind is None:
        raise ValueError(f"{path} is not an AesNet run (task {(config.get('task') or {}).get('_target_')!r})")
    # The model is rebuilt from the recorded keys by AesNet's own classes; no _target_ from the
    # file is called.
    spec, frozen = model_spec(config)
    written = []
    if kind == "pretrain":
        encoder = ImageEncoder(spec["encoder"], spec.get("image_size"))
        prefix = "backbone."
        encoder.load_state_dict({k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)})
    else:
        spec.pop("encoder_weights", None)
        scorer = AesNetScorer(AesNetScorerConfig(**spec, frozen_backbone=frozen))
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
