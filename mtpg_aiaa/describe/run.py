"""Describe a list of images into an ``image,score,comment`` CSV, resumably and in shards.

    summary = describe_items(items, settings, "outputs/describe/train_set.gallerygpt.csv")

Per shard: skip images some part file already holds, describe the rest in batches
(appending each batch to this shard's part file), then merge if every image is done.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from tqdm.auto import tqdm

from mtpg_aiaa.data.errors import BadInputError
from mtpg_aiaa.data.images import DEFAULT_MAX_PIXELS, load_rgb_image
from mtpg_aiaa.describe.describer import Describer, DescriberSettings, load_describer
from mtpg_aiaa.errors import SettingError
from mtpg_aiaa.describe.inputs import DescribeItem
from mtpg_aiaa.describe.length import longclip_context_length, longclip_token_counts
from mtpg_aiaa.describe.sharding import Shard, local_device_index, shard_positions
from mtpg_aiaa.describe.store import (
    RUN_LOG_SUFFIX,
    PartWriter,
    append_json_line,
    check_run_settings,
    parts_dir_for,
    read_json_lines,
    read_records,
    write_descriptions_csv,
    write_text_atomic,
)

logger = logging.getLogger(__name__)

ON_BAD_IMAGE = ("error", "skip")
_MAX_LISTED = 50  # images named in the summary per category


def summary_path_for(output: str | Path) -> Path:
    return Path(output).with_suffix(".summary.json")


def describe_device(name: str) -> torch.device:
    """``auto``: the launcher's local GPU (``LOCAL_RANK``) or the first one; CPU without CUDA."""
    if name != "auto":
        return torch.device(name)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_device_index() or 0)


def describe_items(
    items: list[DescribeItem],
    settings: DescriberSettings,
    output: str | Path,
    *,
    batch_size: int = 8,
    shard: Shard = Shard(0, 1),
    shard_mode: str = "strided",
    overwrite: bool = False,
    on_bad_image: str = "error",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    make_describer: Optional[Callable[[], Describer]] = None,
) -> dict[str, Any]:
    """Describe this shard's unfinished ``items``; merge the CSV once all shards are done.

    Args:
        items: the whole input in output order (every shard gets the same list).
        output: the ``image,score,comment`` CSV; part files live in ``OUTPUT.parts/`` and
            the summary in ``OUTPUT`` with suffix ``.summary.json``.
        make_describer: called once, only if something is left to describe (default:
            :func:`load_describer` on :func:`describe_device`).

    Returns:
        The summary (also written as JSON when the CSV is merged): counts of images,
        described, skipped, over-long for Long-CLIP, this run's images/s, and ``merged``.
    """
    if batch_size < 1:
        raise SettingError(f"batch_size must be positive, got {batch_size}")
    if on_bad_image not in ON_BAD_IMAGE:
        raise SettingError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
    output = Path(output)
    parts_dir = parts_dir_for(output)
    _prepare_output(output, parts_dir, overwrite, shard)
    device = describe_device(settings.device)
    fingerprint = settings.fingerprint(device)
    check_run_settings(parts_dir, fingerprint)

    finished = read_records(parts_dir)
    mine = [items[i] for i in shard_positions(len(items), shard, shard_mode)]
    pending = [item for item in mine if item.image not in finished]
    logger.info("%s: %d of %d images of this shard already done, %d to describe",
                shard.name, len(mine) - len(pending), len(mine), len(pending))  # fmt: skip

    generated, seconds = 0, 0.0
    if pending:
        describer = (make_describer or (lambda: load_describer(settings, device)))()
        generated, seconds = _describe_pending(
            pending, describer, PartWriter(parts_dir, shard.name), batch_size, on_bad_image, max_pixels, progress
        )
        append_json_line(parts_dir / f"{shard.name}{RUN_LOG_SUFFIX}",
                         {"images": generated, "seconds": seconds, "device": str(device)})
    summary = {
        "output": str(output),
        "rank": shard.rank,
        "world_size": shard.world_size,
        "resumed": len(mine) - len(pending),
        "described_this_run": generated,
        "seconds_this_run": round(seconds, 3),
        "images_per_second": round(generated / seconds, 4) if seconds > 0 else None,
        "settings": fingerprint,
    }
    summary.update(_merge_if_complete(items, parts_dir, output))
    if summary["merged"]:
        write_text_atomic(summary_path_for(output), json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def _prepare_output(output: Path, parts_dir: Path, overwrite: bool, shard: Shard) -> None:
    if overwrite:
        if shard.world_size > 1:
            raise SettingError(
                f"overwrite=true with {shard.world_size} shards would let one shard delete another's "
                f"work; delete {output} and {parts_dir} once, then start the shards without it"
            )  # fmt: skip
        shutil.rmtree(parts_dir, ignore_errors=True)
        output.unlink(missing_ok=True)
        summary_path_for(output).unlink(missing_ok=True)
    elif output.exists() and not parts_dir.is_dir():
        raise SettingError(
            f"{output} exists but has no {parts_dir.name}/ to resume from; choose another output "
            "or set overwrite=true to replace it"
        )


def _describe_pending(
    pending: list[DescribeItem],
    describer: Describer,
    writer: PartWriter,
    batch_size: int,
    on_bad_image: str,
    max_pixels: int,
    progress: bool,
) -> tuple[int, float]:
    context = longclip_context_length()
    generated = 0
    start = time.perf_counter()
    bar = tqdm(total=len(pending), desc="describing", unit="img", disable=not progress, dynamic_ncols=True)
    with writer, bar:
        for first in range(0, len(pending), batch_size):
            batch = pending[first : first + batch_size]
            images, loaded, records = [], [], []
            for item in batch:
                try:
                    images.append(load_rgb_image(item.path, max_pixels=max_pixels))
                    loaded.append(item)
                except BadInputError as error:
                    reason = f"{error} (input row {item.row}, 0-based, image {item.image!r})"
                    if on_bad_image == "error":
                        raise BadInputError(reason) from error
                    logger.warning("skipping a bad image: %s", reason)
                    records.append({"image": item.image, "skipped": reason})
            generations = describer.describe(images)
            counts = longclip_token_counts([g.text for g in generations])
            for item, generation, count in zip(loaded, generations, counts):
                records.append({
                    "image": item.image, "comment": generation.text, "new_tokens": generation.new_tokens,
                    "stop": generation.stop, "trimmed": generation.trimmed, "longclip_tokens": count,
                })  # fmt: skip
                if count > context:
                    logger.warning("%s: description has %d Long-CLIP tokens > %d", item.image, count, context)
            writer.append(records)
            generated += len(generations)
            bar.update(len(batch))
            bar.set_postfix(img_s=f"{generated / max(time.perf_counter() - start, 1e-9):.2f}")
    return generated, time.perf_counter() - start


def _merge_if_complete(items: list[DescribeItem], parts_dir: Path, output: Path) -> dict[str, Any]:
    records = read_records(parts_dir)
    missing = [item.image for item in items if item.image not in records]
    if missing:
        logger.info("%d image(s) not described yet (other shards still running?); %s not written",
                    len(missing), output)  # fmt: skip
        return {"merged": False, "images": len(items), "missing": len(missing)}
    done = [(item, records[item.image]) for item in items]
    described = [(item, r) for item, r in done if "skipped" not in r]
    write_descriptions_csv(output, [(item.image, item.score, r["comment"]) for item, r in described])
    context = longclip_context_length()
    over = [item.image for item, r in described if r["longclip_tokens"] > context]
    empty = [item.image for item, r in described if not r["comment"].strip()]
    skipped = [{"image": item.image, "reason": r["skipped"]} for item, r in done if "skipped" in r]
    tokens = [r["longclip_tokens"] for _, r in described]
    runs = [run for path in sorted(parts_dir.glob(f"*{RUN_LOG_SUFFIX}"))
            for run in read_json_lines(path, required_key="images")]  # fmt: skip
    run_images, run_seconds = sum(r["images"] for r in runs), sum(r["seconds"] for r in runs)
    return {
        "merged": True,
        "images": len(items),
        "described": len(described),
        "skipped": len(skipped),
        "skipped_images": skipped[:_MAX_LISTED],
        "longclip_context": context,
        "truncated_for_longclip": len(over),
        "truncated_images": over[:_MAX_LISTED],
        "stopped_at_budget": sum(r["stop"] == "budget" for _, r in described),
        "trimmed_to_sentence": sum(bool(r["trimmed"]) for _, r in described),
        "empty": len(empty),
        "empty_images": empty[:_MAX_LISTED],
        "longclip_tokens_mean": round(sum(tokens) / len(tokens), 2) if tokens else None,
        "longclip_tokens_max": max(tokens) if tokens else None,
        "not_in_input": len(set(records) - {item.image for item in items}),
        "runs": len(runs),
        # per shard, over every completed run (this one and earlier ones that were resumed)
        "images_per_second_all_runs": round(run_images / run_seconds, 4) if run_seconds > 0 else None,
    }
