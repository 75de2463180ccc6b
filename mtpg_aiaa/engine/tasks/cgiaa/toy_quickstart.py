"""The CG-IAA CPU quickstart (``make quickstart-cgiaa``): the whole pipeline on the toy-art set.

1. Toy pictures and their critiques from the known factors (``models/cgiaa/toy_critiques.py``).
2. VLAP: a tiny CLIP trained from scratch with symmetric InfoNCE on (picture, its four
   critiques joined) pairs of the train split.
3. MAEL: one tiny expert per attribute (ClipCap recipe with GPT-2 trained too, as the
   toy GPT-2 starts random) on the train split; reported: exact match of the beam-searched
   critique with the toy critique on the held-out test split, beside the share the most
   frequent train critique would get.
4. MAP: the experts' generated critiques (never the toy ones: the "general" critique is cut
   from the score) cached for every picture; a MAP head on the image + four critique
   features vs the same head on the image feature alone, CLIP frozen, both trained on the
   train split with fixed settings (nothing is tuned), SRCC on the test split for several
   head seeds, and a paired bootstrap over test pictures of the seed-mean SRCC difference.

Every size here is ours, picked to run in minutes on two shared CPU cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from ....backbone.longclip import LongCLIP, LongCLIPArch
from ....data import load_rgb_image
from ....data.toy import make_toy_dataset
from ....metrics import srcc
from ....models.cgiaa import ATTRIBUTES, CritiqueExpert, CritiqueGenerator, GPT2Sizes, MapperConfig, load_gpt2_tokenizer
from ....models.cgiaa.critique_data import write_critique_csv
from ....models.cgiaa.losses import critique_token_loss, symmetric_infonce
from ....models.cgiaa.prefix import build_release_transform, clip_prefix
from ....models.cgiaa.scorer import CGIAAScorer, CGIAAScorerConfig
from ....models.cgiaa.small_tokenizer import write_small_gpt2_tokenizer
from ....models.cgiaa.toy_critiques import toy_critiques, toy_words
from .expert import encode_captions

log = logging.getLogger("quickstart-cgiaa")
MAX_TOKENS = 16  # the longest toy critique is 9 tokens with its "."


def tiny_clip_arch(image_size: int) -> LongCLIPArch:
    return LongCLIPArch(embed_dim=64, image_size=image_size, patch_size=8, vision_width=96, vision_layers=3,
                        text_width=64, text_layers=2, context_length=77)  # fmt: skip


def load_pictures(table: pd.DataFrame, root: Path, image_size: int) -> torch.Tensor:
    """``[N, 3, S, S]``: every picture once, in the release's evaluation view."""
    transform = build_release_transform(image_size)
    return torch.stack([transform(load_rgb_image(root / name)) for name in table["image"]])


def train_vlap(clip: LongCLIP, pixels: torch.Tensor, texts: list[str], steps: int, batch_size: int, seed: int) -> float:
    """Symmetric InfoNCE (temperature 0.07) on (picture, critique text) pairs; returns the last loss."""
    tokens = clip_tokens(texts)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=5e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    clip.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        index = torch.randperm(len(texts), generator=generator)[:batch_size]
        loss = symmetric_infonce(clip.encode_image(pixels[index]), clip.encode_text(tokens[index]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            log.info("VLAP step %d: loss %.3f", step, float(loss.detach()))
    return float(loss)


def clip_tokens(texts: list[str]) -> torch.Tensor:
    from ....tokenizer import get_tokenizer

    return get_tokenizer(77)(texts)


def train_expert(prefixes: torch.Tensor, captions: list[str], tokenizer, steps: int, batch_size: int,
                 seed: int) -> CritiqueExpert:  # fmt: skip
    """A tiny expert (GPT-2 and mapper both trained) on ``prefixes [N, D]`` and their captions."""
    torch.manual_seed(seed)
    sizes = GPT2Sizes(vocab_size=len(tokenizer), n_positions=64, n_embd=64, n_layer=2, n_inner=256)
    expert = CritiqueExpert(sizes, MapperConfig(clip_dim=prefixes.shape[1], embed_dim=64, clip_length=4, prefix_length=4,
                                                num_layers=1, mlp_dim=128))  # fmt: skip
    tokens, mask = encode_captions(tokenizer, captions, MAX_TOKENS)
    optimizer = torch.optim.AdamW(expert.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    expert.train()
    for step in range(steps):
        index = torch.randperm(len(captions), generator=generator)[:batch_size]
        full_mask = torch.cat([torch.ones(len(index), expert.prefix_length), mask[index]], dim=1)
        logits = expert(tokens[index], prefixes[index], full_mask)
        loss = critique_token_loss(logits, tokens[index], expert.prefix_length, mask[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            log.info("expert step %d: loss %.3f", step, float(loss.detach()))
    return expert.eval()


def map_features(scorer: CGIAAScorer, pixels: torch.Tensor, critiques: list[dict[str, str]]) -> torch.Tensor:
    """``scorer.features`` of every picture (CLIP frozen, so computed once)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), 128):
            rows = critiques[start : start + 128]
            tokens = scorer.tokenize({name: [r[name] for r in rows] for name in scorer.text_names})
            out.append(scorer.features({"image": pixels[start : start + 128], "tokens": tokens}))
    return torch.cat(out)


def train_head(scorer: CGIAAScorer, features: torch.Tensor, scores: torch.Tensor, epochs: int, seed: int) -> None:
    """MAP's LayerNorm + linear head, MSE to the score, Adam, batches of 64."""
    torch.manual_seed(seed)
    scorer.norm.reset_parameters()
    scorer.head.reset_parameters()
    parameters = [*scorer.norm.parameters(), *scorer.head.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(scores), generator=generator).split(64):
            pred = scorer.head(scorer.norm(features[index])).squeeze(-1)
            loss = torch.nn.functional.mse_loss(pred, scores[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def predict_head(scorer: CGIAAScorer, features: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return scorer.head(scorer.norm(features)).squeeze(-1).numpy()


def paired_bootstrap(pred_a: list[np.ndarray], pred_b: list[np.ndarray], target: np.ndarray, n: int = 1000,
                     seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Seed-mean SRCC(a) - SRCC(b) on the same test pictures, its 95 % bootstrap interval
    (one resample of pictures shared by all seeds) and the share of resamples <= 0."""
    rng = np.random.default_rng(seed)

    def mean_difference(index: np.ndarray) -> float:
        t = rankdata(target[index])
        return float(np.mean([np.corrcoef(rankdata(a[index]), t)[0, 1] - np.corrcoef(rankdata(b[index]), t)[0, 1]
                              for a, b in zip(pred_a, pred_b)]))  # fmt: skip

    observed = mean_difference(np.arange(len(target)))
    draws = np.array([mean_difference(rng.integers(0, len(target), len(target))) for _ in range(n)])
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"diff": observed, "ci_low": float(low), "ci_high": float(high), "p_le_0": float(np.mean(draws <= 0))}


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    toy = make_toy_dataset(out / "toy", num_images=args.num_images, image_size=args.image_size, seed=0, workers=1,
                           progress=False)  # fmt: skip
    factors = pd.read_csv(toy["factors_csv"], dtype={"image": str})
    truth = [toy_critiques(row) for row in factors.to_dict("records")]
    split = factors["split"].to_numpy()
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    pixels = load_pictures(factors, Path(toy["image_root"]), args.image_size)
    scores = torch.tensor(factors["score"].to_numpy(), dtype=torch.float32)
    log.info("toy set: %d train / %d test pictures (%.0f s)", len(train), len(test), time.perf_counter() - started)

    torch.manual_seed(0)
    clip = LongCLIP(tiny_clip_arch(args.image_size))
    joined = [" ".join(truth[i][a] for a in ATTRIBUTES) for i in train]
    vlap_loss = train_vlap(clip, pixels[train], joined, args.vlap_steps, 64, seed=0)
    clip.eval().requires_grad_(False)
    prefixes = torch.cat([clip_prefix(clip, pixels[s : s + 256]) for s in range(0, len(pixels), 256)])
    log.info("VLAP: %d steps, last loss %.3f (%.0f s)", args.vlap_steps, vlap_loss, time.perf_counter() - started)

    tokenizer = load_gpt2_tokenizer(write_small_gpt2_tokenizer(out / "tokenizer", toy_words()))
    experts = {a: train_expert(prefixes[train], [truth[i][a] for i in train], tokenizer, args.expert_steps, 64, seed=1)
               for a in ATTRIBUTES}  # fmt: skip
    generator = CritiqueGenerator(clip, experts, tokenizer).eval()
    generated = generator.critique_prefixes(prefixes, beam_size=5, max_steps=MAX_TOKENS, batch_size=128)
    write_critique_csv([{"image": name, **row} for name, row in zip(factors["image"], generated)], out / "critiques.csv")
    exact, majority = {}, {}
    for a in ATTRIBUTES:
        common = pd.Series([truth[i][a] for i in train]).mode()[0]
        exact[a] = float(np.mean([generated[i][a] == truth[i][a] for i in test]))
        majority[a] = float(np.mean([truth[i][a] == common for i in test]))
    log.info("experts: exact match on test %s (most frequent critique: %s) (%.0f s)", exact, majority,
             time.perf_counter() - started)  # fmt: skip

    arch = clip.arch.to_dict()
    arms = {"map": CGIAAScorer(CGIAAScorerConfig(clip=arch)), "image_only": CGIAAScorer(CGIAAScorerConfig(clip=arch, attributes=()))}
    predictions: dict[str, list[np.ndarray]] = {name: [] for name in arms}
    for name, scorer in arms.items():
        scorer.clip.load_state_dict(clip.state_dict())
        scorer.eval().requires_grad_(False)
        scorer.norm.requires_grad_(True)
        scorer.head.requires_grad_(True)
        features = map_features(scorer, pixels, generated)
        for seed in range(args.seeds):
            train_head(scorer, features[train], scores[train], args.map_epochs, seed)
            predictions[name].append(predict_head(scorer, features[test]))
    target = scores[test].numpy()
    results = {
        "pictures": {"train": len(train), "test": len(test)},
        "vlap_last_loss": vlap_loss,
        "expert_exact_match_test": exact,
        "most_frequent_critique_test": majority,
        "srcc_test": {name: [srcc(p, target) for p in preds] for name, preds in predictions.items()},
        "paired_bootstrap_map_minus_image_only": paired_bootstrap(predictions["map"], predictions["image_only"], target,
                                                                  n=args.bootstrap),  # fmt: skip
        "settings": vars(args),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/quickstart-cgiaa")
    parser.add_argument("--num-images", type=int, default=1500)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--vlap-steps", type=int, default=300)
    parser.add_argument("--expert-steps", type=int, default=300)
    parser.add_argument("--map-epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = run(parse_args(argv))
    print(json.dumps({k: v for k, v in results.items() if k != "settings"}, indent=2))


if __name__ == "__main__":
    main()
