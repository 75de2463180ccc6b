"""Score a labelled dataset with any system's weights and report SRCC / PLCC / accuracy.

    python test.py ckpt=checkpoints/model_save.pt data=baid data.root=/data/BAID \
        data.descriptions_csv=/data/BAID/test_descriptions.csv
    python test.py ckpt=run/best.safetensors data.csv=my.csv data.image_root=my_images/
    python test.py ckpt=run/best.safetensors critiques=critiques.csv data.csv=... data.image_root=...  # CG-IAA
    torchrun --standalone --nproc_per_node=4 test.py ckpt=...   # same numbers, 4 GPUs

Writes metrics.json, predictions.csv and scatter.png into the run directory.
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports: start-up is part of the time split

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from mtpg_aiaa.backbone.attention import set_attention  # noqa: E402
from mtpg_aiaa.backbone.compiling import compile_blocks  # noqa: E402
from mtpg_aiaa.data import AestheticsDataset, BadInputError, collate_samples  # noqa: E402
from mtpg_aiaa.data.device_decoding import DeviceDecodingLoader, EncodedImageDataset, collate_encoded  # noqa: E402
from mtpg_aiaa.data.named_texts import read_table  # noqa: E402
from mtpg_aiaa.data.provenance import check_overlap, check_toy_split  # noqa: E402
from mtpg_aiaa.data.toy import ensure_dataset  # noqa: E402
from mtpg_aiaa.engine import distributed  # noqa: E402
from mtpg_aiaa.engine.cli_errors import one_line_errors, run_main  # noqa: E402
from mtpg_aiaa.engine.run_names import register_resolvers  # noqa: E402
from mtpg_aiaa.device import resolve_device  # noqa: E402
from mtpg_aiaa.eval.predict import Predictions, predict, write_predictions  # noqa: E402
from mtpg_aiaa.eval.metrics import compute_metrics_or_null, format_metrics_table  # noqa: E402
from mtpg_aiaa.json_output import dumps_strict  # noqa: E402
from mtpg_aiaa.models.loading import load_model  # noqa: E402
from mtpg_aiaa.eval.plots import save_scatter_plot  # noqa: E402

log = logging.getLogger("test")
register_resolvers()


def model_texts(cfg: DictConfig, model) -> dict | None:
    """``data.texts``, plus, with ``critiques=FILE`` (CG-IAA's cache CSV
    ``image,color,composition,dof,general``), one text per critique the scorer reads."""
    texts = OmegaConf.to_container(cfg.data.texts, resolve=True) if cfg.data.get("texts") else {}
    if cfg.get("critiques"):
        texts.update({name: {"file": str(cfg.critiques), "column": name} for name in model.text_names})
    return texts or None


def evaluate(cfg: DictConfig, output_dir: str | Path) -> dict:
    """Run the evaluation described by ``cfg`` (``configs/test.yaml``); returns the metrics.

    Under torchrun every rank scores whole batches (``distributed.shard_batches``) and rank 0
    gathers them in input order, writes the outputs and returns the metrics (others: ``{}``).
    """
    context, device = distributed.init_distributed(resolve_device(cfg.device))
    try:
        return _evaluate(cfg, Path(output_dir), context, device)
    finally:
        distributed.shutdown()


def _evaluate(cfg: DictConfig, output_dir: Path, context: distributed.DistributedContext, device) -> dict:
    precision = cfg.eval.precision
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    timings = {"start_up": time.perf_counter() - STARTED}  # imports, CUDA and process-group start-up
    start = time.perf_counter()
    model = load_model(cfg.ckpt, device=device, expect="scorer", backbone_precision=precision)
    set_attention(model, cfg.eval.get("attention", "auto"))
    if cfg.eval.get("compile", False):
        compile_blocks(model)  # compiled on the first batch: its time lands in `model`
    timings["weights"] = time.perf_counter() - start
    if cfg.eval.prompts:  # MTPG-AIAA only: its level prompt strings
        model.set_prompts(cfg.eval.prompts)
    preprocess = cfg.eval.preprocess  # MTPG-AIAA only: another preprocessing than the checkpoint's
    data = cfg.data
    allow_overlap = bool(cfg.eval.get("allow_train_overlap", False))
    check_toy_split(model.training_data, data, allow_overlap)  # before the toy tables are re-split
    if context.is_main:
        ensure_dataset(data)
    distributed.barrier()
    table = read_table(
        data.csv,
        texts=model_texts(cfg, model),
        descriptions_csv=data.descriptions_csv,
        score_scale=data.score_scale,
        description_column=data.description_column,
        max_description_chars=data.max_description_chars,
        allow_paths_outside_root=data.get("allow_paths_outside_root", False),
    )
    training_data_check = check_overlap(model.training_data, data, table["image"], str(data.csv), allow_overlap)
    if "description" in model.text_names and not table.attrs.get("has_descriptions", True):
        log.warning("%s has no descriptions: every image is scored with an empty one", data.csv)
    truncated = model.count_truncated(table["description"]) if "description" in table else 0
    on_device = cfg.eval.get("decode", "cpu") == "device"  # nvJPEG on CUDA: data/device_decoding.py
    dataset = (EncodedImageDataset if on_device else AestheticsDataset)(
        table,
        data.image_root,
        None if on_device else model.build_transform(**({"preprocess": preprocess} if preprocess else {})),
        tokenize_texts=model.tokenize if model.text_names else None,
        text_names=model.text_names,
        on_bad_image=data.on_bad_image,
        max_pixels=data.max_pixels,
    )
    # Batch composition is part of the official protocol: consecutive batches in CSV order,
    # whole batches per rank, so any number of processes gives the single-process numbers.
    batches = distributed.shard_batches(len(dataset), cfg.eval.batch_size, context.rank, context.world_size)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=cfg.eval.num_workers,
                        collate_fn=collate_encoded if on_device else collate_samples,
                        pin_memory=device.type == "cuda" and not on_device)  # fmt: skip
    if on_device:
        loader = DeviceDecodingLoader(loader, device, model.image_size, preprocess or model.preprocess or "official")
    timings["table"] = time.perf_counter() - start - timings["weights"]
    predictions = predict(model, loader, device, batching=cfg.eval.batching,
                          progress=cfg.eval.progress and context.is_main)  # fmt: skip
    # Waiting for the loader is decoding (and preprocessing) that did not keep up with the model.
    timings.update(waiting_for_decoding=predictions.waiting_s, model=predictions.seconds - predictions.waiting_s)
    start = time.perf_counter()
    if context.enabled:
        predictions = Predictions.merge(distributed.all_gather_objects(predictions))
        if not context.is_main:
            return {}
    scale = float(data.score_scale)
    write_predictions(predictions, output_dir, scale)  # whatever the metrics can do
    if predictions.table.empty:
        raise BadInputError(f"no image of {data.csv} could be scored ({len(predictions.skipped)} skipped); "
                            f"see {output_dir / 'skipped.csv'}")  # fmt: skip
    pred = predictions.table["pred_0_1"].to_numpy() * scale
    score = predictions.table["score"].to_numpy()
    metrics = compute_metrics_or_null(pred, score, threshold=cfg.eval.threshold * scale,
                                      n_bootstrap=cfg.eval.n_bootstrap)  # fmt: skip
    metrics.update(
        checkpoint=str(cfg.ckpt),
        checkpoint_kind=model.weights_kind,
        system=model.system,
        score_range=[model.score_range.low, model.score_range.high],
        official_checkpoint=model.weights_kind == "mtpg weights (PyTorch state dict)",
        training_data_check=training_data_check,  # passed | overridden | not recorded (data/provenance.py)
        batching=cfg.eval.batching,
        batch_size=cfg.eval.batch_size,
        preprocess=preprocess or model.preprocess,
        prompts=model.prompt_set,
        backbone_precision=precision,
        n_skipped=len(predictions.skipped),
        n_descriptions_truncated=int(truncated),
        images_per_second=predictions.images_per_second,
    )
    timings["metrics"] = time.perf_counter() - start
    (output_dir / "metrics.json").write_text(dumps_strict(metrics, indent=2) + "\n")  # NaN -> null
    save_scatter_plot(
        pred, score, output_dir / "scatter.png", threshold=cfg.eval.threshold * scale,
        title=Path(str(data.csv)).name, metrics=metrics, scale_label=f"0-{scale:g}",
    )  # fmt: skip
    print(format_metrics_table(metrics, title=f"{Path(str(cfg.ckpt)).name} on {Path(str(data.csv)).name}"))
    if metrics.get("note"):
        print(metrics["note"])
    if predictions.skipped:
        print(f"skipped {len(predictions.skipped)} unreadable image(s): see {output_dir / 'skipped.csv'}")
    if truncated:
        print(f"{truncated} description(s) exceeded 248 tokens and were truncated (as the authors' code does)")
    timings["writing"] = time.perf_counter() - start - timings["metrics"]
    timings["total"] = time.perf_counter() - STARTED
    metrics["time_split_s"] = {key: round(value, 3) for key, value in timings.items()}
    (output_dir / "metrics.json").write_text(dumps_strict(metrics, indent=2) + "\n")  # NaN -> null
    log.info("time: %s", ", ".join(f"{key} {value:.1f} s" for key, value in timings.items()))
    print(f"results in {output_dir}")
    return metrics


@hydra.main(config_path="configs", config_name="test", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    output_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    OmegaConf.save(cfg, Path(output_dir) / "test_config.yaml", resolve=True)
    evaluate(cfg, output_dir)


if __name__ == "__main__":
    run_main(main)  # Hydra's own errors (unknown task=, unknown key) in one line, exit 2
