"""The toy claim, on CPU: does AesNet pretraining give a better frozen backbone than random
init and than image-only self-supervision, and does the semantic affinity term matter?

    python -m mtpg_aiaa.experiments.aesnet.toy_claim --out outputs/aesnet_toy   (make quickstart-aesnet)

Arms, each from the same random init per seed: ``random`` (no pretraining), ``simclr``
(image-only: two flipped / cropped views, symmetric InfoNCE), ``aesnet`` (multi-attribute
InfoNCE on Toy-HAND), ``aesnet+restrain`` (plus the restrain affinity term). Each backbone
is probed frozen: ridge regression on the train split's features, its strength picked on
the val split, SRCC reported on the test split, which nothing else looks at. Differences
are paired over the same test images; the interval is a bootstrap over test images
(one resample shared by every seed and arm) of the mean over seeds (``eval.bootstrap``).

Every pretraining runs through the engine's ``Trainer``: the two AesNet arms with the
registered ``aesnet/pretrain`` task, SimCLR with its own one-step task (``simclr.py``).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mtpg_aiaa.data.toy import make_toy_dataset
from mtpg_aiaa.engine.run import fit
from mtpg_aiaa.data.dataset import AestheticsDataset, collate_samples
from mtpg_aiaa.engine.tasks.aesnet.data import read_attribute_table, table_image_dataset
from mtpg_aiaa.engine.tasks.aesnet.pretrain import AesNetPretrainTask
from mtpg_aiaa.engine.trainer import TrainerConfig
from mtpg_aiaa.eval.bootstrap import paired_bootstrap
from mtpg_aiaa.eval.metrics import srcc
from mtpg_aiaa.models.aesnet import AesNetConfig, AesNetPretrainModel, attribute_prompt
from mtpg_aiaa.models.aesnet.model import build_image_transform
from mtpg_aiaa.models.aesnet.text import FrozenTextEncoder
from .simclr import SimCLRModel, SimCLRTask
from .toy_hand import TOY_ATTRIBUTES, write_toy_hand

log = logging.getLogger("aesnet.toy_claim")
ARMS = ("random", "simclr", "aesnet", "aesnet+restrain")
RIDGE_STRENGTHS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def build_model(encoder: str, size: int, text_encoder: FrozenTextEncoder, seed: int) -> AesNetPretrainModel:
    torch.manual_seed(seed)  # the same initial backbone for every arm of a seed
    prompts = text_encoder.encode([attribute_prompt(a) for a in TOY_ATTRIBUTES])
    config = AesNetConfig(encoder=encoder, image_size=size, attributes=TOY_ATTRIBUTES, embed_dim=64, hidden_dim=128)
    return AesNetPretrainModel(config, prompts)


def pretrain(arm: str, model: AesNetPretrainModel, task: AesNetPretrainTask, steps: int, batch_size: int, seed: int,
             lr: float, run_dir: Path) -> float:  # fmt: skip
    """``steps`` AdamW steps of ``arm``'s objective through the ``Trainer``; returns the last loss."""
    if arm == "random":
        return float("nan")
    if arm == "simclr":
        model, task = SimCLRModel(model.backbone, projection_dim=64), SimCLRTask(task.train_dataset, task.collate, seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    config = TrainerConfig(max_steps=steps, batch_size=batch_size, seed=seed, clip_grad_norm=1.0, precision="fp32",
                           num_workers=0, progress=False, log_every=steps, monitor="val/retrieval")  # fmt: skip
    fit(model, task, optimizer, config, run_dir, validate="end")
    model.eval()
    history = (run_dir / "metrics.jsonl").read_text().splitlines()
    return float(next(json.loads(row)["train/loss"] for row in reversed(history) if "train/loss" in row))


@torch.inference_mode()
def features(model: AesNetPretrainModel, dataset: AestheticsDataset, batch_size: int = 128) -> np.ndarray:
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_samples)
    return torch.cat([model.backbone(b["image"]) for b in loader]).numpy().astype(np.float64)


def ridge_probe(train_x, train_y, val_x, val_y, test_x) -> tuple[np.ndarray, float]:
    """Closed-form ridge on standardised features; strength by val SRCC. Returns test predictions."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    a, v, t = (train_x - mean) / std, (val_x - mean) / std, (test_x - mean) / std
    y_mean = train_y.mean()
    best = None
    for strength in RIDGE_STRENGTHS:
        w = np.linalg.solve(a.T @ a + strength * len(a) * np.eye(a.shape[1]), a.T @ (train_y - y_mean))
        score = srcc(v @ w, val_y) if np.ptp(v @ w) > 0 else -1.0
        if best is None or score > best[0]:
            best = (score, strength, w)
    return t @ best[2] + y_mean, best[1]


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    toy = make_toy_dataset(args.root, num_images=args.images, image_size=args.size, seed=0, workers=args.threads,
                           progress=False)  # fmt: skip
    table_path = Path(args.root) / "toy_hand.csv"
    write_toy_hand(args.root, table_path)
    tables = {split: read_attribute_table(table_path, TOY_ATTRIBUTES, split) for split in ("train", "val", "test")}
    torch.manual_seed(0)
    text_encoder = FrozenTextEncoder(args.text_backbone)  # random and frozen: distinct texts, distinct features
    results: dict = {"args": vars(args), "arms": {}, "seeds": args.seeds}
    predictions: dict[str, list[np.ndarray]] = {arm: [] for arm in ARMS}
    test_y = tables["test"]["score"].to_numpy()
    for seed in args.seeds:
        for arm in ARMS:
            model = build_model(args.encoder, args.size, text_encoder, seed)
            restrain = arm == "aesnet+restrain"
            task = AesNetPretrainTask(model, text_encoder, tables["train"], None, toy["image_root"],
                                      {a: 1.0 for a in TOY_ATTRIBUTES}, affinity="restrain" if restrain else None,
                                      affinity_weight=args.affinity_weight if restrain else 0.0, seed=seed)  # fmt: skip
            last_loss = pretrain(arm, model, task, args.steps, args.batch_size, seed, args.lr,
                                 Path(args.out) / "runs" / f"{arm}-seed{seed}")  # fmt: skip
            transform = build_image_transform(model.backbone)
            x = {s: features(model, table_image_dataset(tables[s], toy["image_root"], transform)) for s in tables}
            test_pred, strength = ridge_probe(x["train"], tables["train"]["score"].to_numpy(), x["val"],
                                              tables["val"]["score"].to_numpy(), x["test"])  # fmt: skip
            predictions[arm].append(test_pred)
            value = srcc(test_pred, test_y)
            results["arms"].setdefault(arm, []).append({"seed": seed, "test_srcc": value, "ridge": strength,
                                                        "last_loss": last_loss})  # fmt: skip
            log.info("seed %d %-16s test SRCC %.3f (ridge %g, last loss %.3f, %.0f s)", seed, arm, value, strength,
                     last_loss, time.perf_counter() - started)  # fmt: skip
    comparisons = {"aesnet+restrain - random": ("aesnet+restrain", "random"),
                   "aesnet+restrain - simclr": ("aesnet+restrain", "simclr"),
                   "aesnet - random": ("aesnet", "random"), "aesnet - simclr": ("aesnet", "simclr"),
                   "aesnet+restrain - aesnet": ("aesnet+restrain", "aesnet")}  # fmt: skip
    results["paired"] = {name: paired_bootstrap(predictions[a], predictions[b], test_y)
                         for name, (a, b) in comparisons.items()}  # fmt: skip
    results["seconds"] = time.perf_counter() - started
    return results


def report(results: dict) -> str:
    lines = ["| arm | test SRCC per seed | mean |", "|---|---|---|"]
    for arm, runs in results["arms"].items():
        values = [r["test_srcc"] for r in runs]
        lines.append(f"| {arm} | {', '.join(f'{v:.3f}' for v in values)} | {np.mean(values):.3f} |")
    lines += ["", "| paired difference (test SRCC, mean over seeds) | diff | 95 % CI | share <= 0 |", "|---|---|---|---|"]
    for name, d in results["paired"].items():
        lines.append(f"| {name} | {d['diff']:+.3f} | [{d['low']:+.3f}, {d['high']:+.3f}] | {d['p_le_0']:.3f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/toy_hand", help="where the toy-art images and Toy-HAND table go")
    parser.add_argument("--out", default="outputs/aesnet_toy")
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--encoder", default="timm:test_resnet")
    parser.add_argument("--text-backbone", default="LongCLIP-tiny")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--affinity-weight", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (results are exact for a given count)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = report(results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    print(f"{results['seconds']:.0f} s; wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
