"""Describe paintings with GalleryGPT (or another captioner) into an ``image,score,comment`` CSV.

    python scripts/describe.py data=baid data.root=/data/BAID table=train_csv \
        describer=gallerygpt describer.model_path=checkpoints/gallerygpt-hf
    python scripts/describe.py images=my_paintings/ describer.model_path=checkpoints/gallerygpt-hf
    torchrun --nproc-per-node 4 scripts/describe.py data=toy describer.model_path=DIR  # 4 GPUs

Re-running the same command resumes; the CSV (and ``.summary.json``) appear when every
image is described. docs/descriptions.md explains the prompt, budget and sharding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mtpg_aiaa.data.images import DEFAULT_MAX_PIXELS
from mtpg_aiaa.data.toy import ensure_dataset
from mtpg_aiaa.engine.cli_errors import one_line_errors, run_main
from mtpg_aiaa.errors import SettingError
from mtpg_aiaa.describe import (
    DescriberSettings,
    describe_items,
    items_from_folder,
    items_from_table,
    resolve_shard,
)

TABLES = ("csv", "train_csv", "val_csv")


def describe(cfg: DictConfig) -> dict[str, Any]:
    """Run what ``cfg`` (``configs/describe.yaml``) asks for; returns the summary."""
    settings = DescriberSettings.from_config(OmegaConf.to_container(cfg.describer, resolve=True))
    if cfg.images:
        items, stem = items_from_folder(cfg.images), Path(str(cfg.images)).name
    else:
        if cfg.table not in TABLES:
            raise SettingError(f"table must be one of {TABLES}, got {cfg.table!r}")
        ensure_dataset(cfg.data)
        csv = cfg.data[cfg.table]
        if csv is None:
            raise SettingError(f"data.{cfg.table} is not set for data={cfg.data}")
        items, stem = items_from_table(csv, cfg.data.image_root, cfg.data.score_scale), Path(str(csv)).stem
    if cfg.limit is not None:
        items = items[: int(cfg.limit)]
    output = Path(cfg.output or Path(cfg.output_root) / f"{stem}.{cfg.describer.name}.csv")
    summary = describe_items(
        items, settings, output,
        batch_size=cfg.batch_size, shard=resolve_shard(cfg.rank, cfg.world_size), shard_mode=cfg.shard_mode,
        overwrite=cfg.overwrite, on_bad_image=cfg.data.get("on_bad_image", "error"),
        max_pixels=cfg.data.get("max_pixels", DEFAULT_MAX_PIXELS), progress=cfg.progress,
    )  # fmt: skip
    print(format_summary(summary))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    speed = summary["images_per_second"]
    lines = [
        f"rank {summary['rank']} of {summary['world_size']}: described {summary['described_this_run']} image(s) "
        f"in {summary['seconds_this_run']:.1f} s ({'-' if speed is None else f'{speed:.2f}'} images/s), "
        f"{summary['resumed']} already done",
    ]  # fmt: skip
    if not summary["merged"]:
        lines.append(f"{summary['missing']} of {summary['images']} images still to describe (other shards); "
                     f"run any shard again to merge {summary['output']}")  # fmt: skip
        return "\n".join(lines)
    lines.append(
        f"{summary['described']} descriptions in {summary['output']} (skipped {summary['skipped']}); "
        f"Long-CLIP tokens mean {summary['longclip_tokens_mean']}, max {summary['longclip_tokens_max']}; "
        f"{summary['truncated_for_longclip']} longer than Long-CLIP's {summary['longclip_context']} tokens; "
        f"{summary['stopped_at_budget']} hit max_new_tokens ({summary['trimmed_to_sentence']} trimmed to a sentence); "
        f"{summary['images_per_second_all_runs']} images/s per shard over {summary['runs']} run(s)"
    )
    if summary["empty"]:
        lines.append(f"warning: {summary['empty']} empty description(s), e.g. {summary['empty_images'][:3]}")
    return "\n".join(lines)


@hydra.main(config_path="../configs", config_name="describe", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    output_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    OmegaConf.save(cfg, Path(output_dir) / "describe_config.yaml", resolve=True)
    describe(cfg)


if __name__ == "__main__":
    run_main(main)  # Hydra's own errors in one line too
