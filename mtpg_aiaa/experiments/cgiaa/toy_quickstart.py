"""The CG-IAA CPU quickstart (``make quickstart-cgiaa``): the whole pipeline on the toy-art set.

1. Toy pictures (32 px: grain, added after the blur, hides the blur at 64 px) and their
   critiques from the known factors (``models/cgiaa/toy_critiques.py``).
2. VLAP: a tiny CLIP trained from scratch on the train split, by default one
   ``class_infonce`` per attribute against that attribute's distinct critiques
   (``--vlap-text joined``: plain symmetric InfoNCE on the four critiques joined).
3. MAEL: one tiny expert per attribute (ClipCap recipe with GPT-2 trained too, as the toy
   GPT-2 starts random) on the released prefix, train split; reported: exact match of the
   beam-searched critique with the toy critique on the held-out split, beside the share the
   most frequent train critique would get.
4. MAP: the experts' generated critiques (never the toy ones: the "general" critique is cut
   from the score) cached; a MAP head on the image + four critique features vs the same head
   on the image feature alone, CLIP frozen, both trained on the scores of ``--map-pictures``
   train pictures, SRCC on the held-out split for several head seeds, and a paired bootstrap
   over held-out pictures of the seed-mean SRCC difference (``eval.bootstrap``).

Every model trains through the engine's ``Trainer`` with the registered CG-IAA tasks
(``cgiaa/vlap`` with its per-attribute option, ``cgiaa/expert``, ``cgiaa/score``); each run
keeps its ``metrics.csv`` and checkpoints under ``<out>/runs/``.

``--eval-split val`` reads every figure on val (where all settings were chosen, docs/cgiaa.md);
the default, ``test``, is for the final settings only. Every size here is ours, picked to run
in minutes on two shared CPU cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mtpg_aiaa.backbone.longclip import LongCLIP, LongCLIPArch
from mtpg_aiaa.data import AestheticsDataset
from mtpg_aiaa.data.toy import make_toy_dataset
from mtpg_aiaa.engine.run import fit
from mtpg_aiaa.engine.tasks.cgiaa.expert import CaptionPrefixes, ExpertTask, compute_prefixes, encode_captions
from mtpg_aiaa.engine.tasks.cgiaa.score import ScoreTask
from mtpg_aiaa.engine.tasks.cgiaa.vlap import VLAPTask
from mtpg_aiaa.engine.trainer import TrainerConfig
from mtpg_aiaa.eval.bootstrap import paired_bootstrap
from mtpg_aiaa.eval.metrics import srcc
from mtpg_aiaa.models.cgiaa import ATTRIBUTES, CritiqueExpert, CritiqueGenerator, GPT2Sizes, MapperConfig, load_gpt2_tokenizer
from mtpg_aiaa.models.cgiaa.critique_data import write_critique_csv
from mtpg_aiaa.models.cgiaa.scorer import CGIAAScorer, CGIAAScorerConfig
from mtpg_aiaa.models.cgiaa.small_tokenizer import write_small_gpt2_tokenizer
from mtpg_aiaa.models.cgiaa.toy_critiques import toy_critiques, toy_words

log = logging.getLogger("quickstart-cgiaa")
MAX_TOKENS = 16  # the longest toy critique is 9 tokens with its "."


def tiny_clip_arch(image_size: int, patch_size: int = 8) -> LongCLIPArch:
    return LongCLIPArch(embed_dim=64, image_size=image_size, patch_size=patch_size, vision_width=96, vision_layers=3,
                        text_width=64, text_layers=2, context_length=77)  # fmt: skip


def trainer_settings(steps: int | None, seed: int, rows: int, epochs: int = 1, batch_size: int = 64) -> TrainerConfig:
    """The quickstart's runs: batches of 64 (of all ``rows`` when fewer: tiny test runs), fp32,
    no clipping, no workers, no progress bar."""
    return TrainerConfig(max_steps=steps, epochs=epochs, batch_size=min(batch_size, rows), seed=seed, clip_grad_norm=None,
                         precision="fp32", num_workers=0, progress=False, log_every=100, monitor="val/neg_loss")  # fmt: skip


class Preloaded(Dataset):
    """Every item of ``rows`` (a dataset with a deterministic transform) read once and kept:
    the same samples, without decoding each picture again at every step (the toy set is 6000
    pictures of 32 px, ~70 MB as tensors)."""

    def __init__(self, rows: Dataset):
        self.items = [rows[i] for i in range(len(rows))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def train_vlap(clip: LongCLIP, pairs: dict[str, pd.DataFrame], image_root: Path, steps: int, seed: int, run_dir: Path,
               text: str = "per-attribute") -> dict[str, float]:  # fmt: skip
    """VLAP (``cgiaa/vlap``, temperature 0.07) on the train pictures' toy critiques; returns the
    validation metrics on ``pairs["val"]`` after the last step.

    ``text="joined"``: symmetric InfoNCE on (picture, its four critiques joined) pairs.
    ``text="per-attribute"``: one ``class_infonce`` per attribute against that attribute's
    distinct critiques, averaged (the task's ``attributes``): every factor has its own loss
    term, and the many pictures that share a critique are positives of it, not negatives.
    """
    if text not in ("joined", "per-attribute"):
        raise ValueError(f"VLAP text must be 'joined' or 'per-attribute', got {text!r}")
    if text == "joined":
        pairs = {k: t.assign(critique=t[list(ATTRIBUTES)].agg(" ".join, axis=1)) for k, t in pairs.items()}
    task = VLAPTask(clip, pairs["train"], pairs["val"], image_root, attributes=ATTRIBUTES if text == "per-attribute" else ())
    task.train_dataset = Preloaded(task.train_dataset)
    # The token table stays at its random start: the toy critiques use ~40 of its 49408 rows,
    # and updating all of them (AdamW, dense gradient) was half the time of a VLAP step.
    clip.token_embedding.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in clip.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.01)
    return fit(clip, task, optimizer, trainer_settings(steps, seed, len(task.train_dataset)), run_dir, validate="end")


def train_expert(prefixes: torch.Tensor, captions: dict[str, list[str]], rows: dict[str, np.ndarray], tokenizer,
                 steps: int, seed: int, run_dir: Path) -> CritiqueExpert:  # fmt: skip
    """A tiny expert (``cgiaa/expert``, GPT-2 and mapper both trained) on ``prefixes [N, D]``:
    ``captions[split]`` belong to the pictures ``rows[split]`` (train, and val for its loss)."""
    torch.manual_seed(seed)
    sizes = GPT2Sizes(vocab_size=len(tokenizer), n_positions=64, n_embd=64, n_layer=2, n_inner=256)
    expert = CritiqueExpert(sizes, MapperConfig(clip_dim=prefixes.shape[1], embed_dim=64, clip_length=4, prefix_length=4,
                                                num_layers=1, mlp_dim=128))  # fmt: skip
    data = {split: CaptionPrefixes(*encode_captions(tokenizer, captions[split], MAX_TOKENS), prefixes,
                                   torch.as_tensor(rows[split])) for split in ("train", "val")}  # fmt: skip
    optimizer = torch.optim.AdamW(expert.parameters(), lr=1e-3)
    fit(expert, ExpertTask(data["train"], data["val"]), optimizer, trainer_settings(steps, seed, len(data["train"])), run_dir,
        validate="end")  # fmt: skip
    return expert.eval()


def train_map_head(scorer: CGIAAScorer, tables: dict[str, pd.DataFrame], image_root: Path, epochs: int, seed: int,
                   run_dir: Path) -> ScoreTask:  # fmt: skip
    """MAP's LayerNorm + linear head (``cgiaa/score``, CLIP frozen, the evaluation view), MSE to
    the score, Adam 3e-3, batches of 64, from a fresh start of ``seed``; returns the task."""
    torch.manual_seed(seed)
    scorer.norm.reset_parameters()
    scorer.head.reset_parameters()
    task = ScoreTask(scorer, tables["scored"], tables["val"], image_root, augment=False)
    task.train_dataset = Preloaded(task.train_dataset)
    optimizer = torch.optim.Adam([*scorer.norm.parameters(), *scorer.head.parameters()], lr=3e-3)
    settings = replace(trainer_settings(None, seed, len(task.train_dataset), epochs=epochs), monitor="val/srcc")
    fit(scorer, task, optimizer, settings, run_dir, validate="end")
    return task


@torch.no_grad()
def predict_scores(scorer: CGIAAScorer, task: ScoreTask, table: pd.DataFrame, image_root: Path, batch_size: int = 256) -> np.ndarray:
    """``[N]`` scores of ``table``'s pictures with their critiques (the evaluation view)."""
    rows = AestheticsDataset(table, image_root, scorer.build_transform(train=False), text_names=scorer.text_names)
    out = []
    scorer.eval()
    for start in range(0, len(rows), batch_size):
        batch = task.collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        out.append(scorer({"image": batch["image"], "tokens": batch["tokens"]})["score"])
    return torch.cat(out).numpy()


def match_gain_interval(hits: np.ndarray, constant: np.ndarray, n: int = 1000, seed: int = 0) -> list[float]:
    """95 % bootstrap interval (held-out pictures resampled) of exact match minus the constant
    answer's, both 0/1 per picture ``[N]`` on the same pictures."""
    rng = np.random.default_rng(seed)
    draws = [float(np.mean(hits[index] - constant[index])) for index in rng.integers(0, len(hits), (n, len(hits)))]
    return [float(v) for v in np.percentile(draws, [2.5, 97.5])]


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    toy = make_toy_dataset(out / "toy", num_images=args.num_images, image_size=args.image_size, seed=0, workers=1,
                           progress=False, split_seed=args.split_seed)  # fmt: skip
    factors = pd.read_csv(toy["factors_csv"], dtype={"image": str})
    truth = [toy_critiques(row) for row in factors.to_dict("records")]
    image_root = Path(toy["image_root"])
    split = factors["split"].to_numpy()
    # Every choice was made on val (--eval-split val); test is read once, for the final settings.
    rows = {name: np.flatnonzero(split == name) for name in ("train", "val", args.eval_split)}
    train, held = rows["train"], rows[args.eval_split]
    truth_table = pd.concat([factors[["image", "score"]], pd.DataFrame(truth, columns=list(ATTRIBUTES))], axis=1)
    log.info("toy set: %d train / %d %s pictures (%.0f s)", len(train), len(held), args.eval_split,
             time.perf_counter() - started)  # fmt: skip

    torch.manual_seed(0)
    clip = LongCLIP(tiny_clip_arch(args.image_size, args.patch_size))
    vlap = train_vlap(clip, {k: truth_table.iloc[rows[k]] for k in ("train", "val")}, image_root, args.vlap_steps,
                      seed=0, run_dir=out / "runs" / "vlap", text=args.vlap_text)  # fmt: skip
    clip.eval().requires_grad_(False)
    prefixes = compute_prefixes(clip, factors[["image"]], image_root, torch.device("cpu"), batch_size=256)
    log.info("VLAP: %d steps, val %s (%.0f s)", args.vlap_steps, {k: round(v, 3) for k, v in vlap.items()},
             time.perf_counter() - started)  # fmt: skip

    tokenizer = load_gpt2_tokenizer(write_small_gpt2_tokenizer(out / "tokenizer", toy_words()))
    experts = {}
    for a in ATTRIBUTES:
        captions = {k: [truth[i][a] for i in rows[k]] for k in ("train", "val")}
        experts[a] = train_expert(prefixes, captions, rows, tokenizer, args.expert_steps, seed=1,
                                  run_dir=out / "runs" / f"expert-{a}")  # fmt: skip
        log.info("expert %s trained (%.0f s)", a, time.perf_counter() - started)
    generator = CritiqueGenerator(clip, experts, tokenizer).eval()
    # MAP's head learns from the scores of the first --map-pictures train pictures (a random
    # subset: splits are a permutation), fewer than the experts' critiques, as in CG-IAA where
    # the experts learn from a critique corpus; it is read on the held-out pictures (and
    # validated once, after its last step, on val).
    scored = train[: args.map_pictures] if args.map_pictures > 0 else train
    used = np.unique(np.concatenate([train, rows["val"], held]))
    critiques = generator.critique_prefixes(prefixes[used], beam_size=5, max_steps=MAX_TOKENS, batch_size=256)
    generated: list[dict[str, str]] = [{} for _ in truth]
    for i, row in zip(used, critiques):
        generated[i] = row
    write_critique_csv([{"image": factors["image"][i], **generated[i]} for i in used], out / "critiques.csv")
    exact, majority, gain = {}, {}, {}
    for a in ATTRIBUTES:
        common = pd.Series([truth[i][a] for i in train]).mode()[0]
        hits = np.array([generated[i][a] == truth[i][a] for i in held], dtype=float)
        constant = np.array([truth[i][a] == common for i in held], dtype=float)
        exact[a], majority[a] = float(hits.mean()), float(constant.mean())
        gain[a] = match_gain_interval(hits, constant, n=args.bootstrap)
    log.info("experts: exact match on %s %s (most frequent critique: %s) (%.0f s)", args.eval_split, exact, majority,
             time.perf_counter() - started)  # fmt: skip

    arch = clip.arch.to_dict()
    generated_table = pd.concat([factors[["image", "score"]], pd.DataFrame(generated, columns=list(ATTRIBUTES))], axis=1)
    tables = {"scored": generated_table.iloc[scored], "val": generated_table.iloc[rows["val"]],
              "held": generated_table.iloc[held]}  # fmt: skip
    # The third arm drops the general critique: the general expert learned the toy score
    # levels of every train picture, more scores than MAP's head sees, so this arm shows
    # what the three attribute critiques add without that score information.
    without_general = tuple(a for a in ATTRIBUTES if a != "general")
    arms = {"map": CGIAAScorer(CGIAAScorerConfig(clip=arch)),
            "image_only": CGIAAScorer(CGIAAScorerConfig(clip=arch, attributes=())),
            "map_without_general": CGIAAScorer(CGIAAScorerConfig(clip=arch, attributes=without_general))}
    predictions: dict[str, list[np.ndarray]] = {name: [] for name in arms}
    for name, scorer in arms.items():
        scorer.clip.load_state_dict(clip.state_dict())
        scorer.requires_grad_(False)
        scorer.norm.requires_grad_(True)
        scorer.head.requires_grad_(True)
        for seed in range(args.seeds):
            task = train_map_head(scorer, tables, image_root, args.map_epochs, seed, out / "runs" / f"map-{name}-{seed}")
            predictions[name].append(predict_scores(scorer, task, tables["held"], image_root))
    target = scores_of(tables["held"])
    results = {
        "eval_split": args.eval_split,
        "pictures": {"train": len(train), "map_scored": len(scored), args.eval_split: len(held)},
        "vlap_val": vlap,
        "expert_exact_match": exact,
        "most_frequent_critique": majority,
        "exact_match_minus_most_frequent_ci95": gain,
        "srcc": {name: [srcc(p, target) for p in preds] for name, preds in predictions.items()},
        "paired_bootstrap_map_minus_image_only": paired_bootstrap(predictions["map"], predictions["image_only"], target,
                                                                  n=args.bootstrap),  # fmt: skip
        "paired_bootstrap_map_without_general_minus_image_only": paired_bootstrap(
            predictions["map_without_general"], predictions["image_only"], target, n=args.bootstrap),
        "settings": vars(args),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(summary_table(results))
    return results


def scores_of(table: pd.DataFrame) -> np.ndarray:
    return table["score"].to_numpy(dtype=np.float64)


def summary_table(results: dict) -> str:
    """The run's figures as a Markdown table (printed at the end and written to ``results.md``)."""
    name = results["eval_split"]
    lines = [f"CG-IAA toy quickstart, split seed {results['settings']['split_seed']}, {results['pictures'][name]} {name} "
             f"pictures, {results['seconds']:.0f} s", "",
             f"| attribute | expert exact match ({name}) | most frequent critique | difference, 95 % CI |",
             "|---|---|---|---|"]  # fmt: skip
    for a in ATTRIBUTES:
        low, high = results["exact_match_minus_most_frequent_ci95"][a]
        lines.append(f"| {a} | {results['expert_exact_match'][a]:.3f} | {results['most_frequent_critique'][a]:.3f} | "
                     f"[{low:+.3f}, {high:+.3f}] |")  # fmt: skip
    lines += ["", f"| scorer (head on {results['pictures']['map_scored']} scored train pictures) | SRCC ({name}) per head seed | mean |",
              "|---|---|---|"]  # fmt: skip
    lines += [f"| {arm} | {', '.join(f'{v:.3f}' for v in values)} | {np.mean(values):.3f} |" for arm, values in results["srcc"].items()]
    lines.append("")
    for arm, label in (("map", "MAP"), ("map_without_general", "MAP without the general critique")):
        boot = results[f"paired_bootstrap_{arm}_minus_image_only"]
        lines.append(f"{label} - image-only: {boot['diff']:+.3f} SRCC, 95 % CI [{boot['low']:+.3f}, "
                     f"{boot['high']:+.3f}], share of resamples <= 0: {boot['p_le_0']:.3f}  ")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/quickstart-cgiaa")
    parser.add_argument("--num-images", type=int, default=6000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--vlap-text", choices=("per-attribute", "joined"), default="per-attribute")
    parser.add_argument("--vlap-steps", type=int, default=3000)
    parser.add_argument("--expert-steps", type=int, default=600)
    parser.add_argument("--map-pictures", type=int, default=500, help="train pictures whose scores MAP learns from (0: all)")
    parser.add_argument("--map-epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--split-seed", type=int, default=101,
                        help="toy split (docs/toy_dataset.md): 0 for development, 101 (held out) for the final run")
    parser.add_argument("--eval-split", choices=("val", "test"), default="test",
                        help="where exact match and SRCC are read: val for every choice, test for the final run")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = run(parse_args(argv))
    print(summary_table(results), end="")


if __name__ == "__main__":
    main()
