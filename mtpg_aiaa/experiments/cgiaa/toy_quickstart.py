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
   over held-out pictures of the seed-mean SRCC difference.

``--eval-split val`` reads every figure on val (where all settings were chosen, docs/cgiaa.md);
the default, ``test``, is for the final settings only. Every size here is ours, picked to run
in minutes on two shared CPU cores.
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
from safetensors.torch import save_file
from mtpg_aiaa.eval.bootstrap import paired_bootstrap

from mtpg_aiaa.backbone.longclip import LongCLIP, LongCLIPArch, trim_text_tokens
from mtpg_aiaa.data import load_rgb_image
from mtpg_aiaa.data.toy import make_toy_dataset
from mtpg_aiaa.eval.metrics import srcc
from mtpg_aiaa.models.cgiaa import ATTRIBUTES, CritiqueExpert, CritiqueGenerator, GPT2Sizes, MapperConfig, load_gpt2_tokenizer
from mtpg_aiaa.models.cgiaa.critique_data import write_critique_csv
from mtpg_aiaa.models.cgiaa.losses import class_infonce, critique_token_loss, symmetric_infonce
from mtpg_aiaa.models.cgiaa.prefix import build_release_transform, clip_prefix
from mtpg_aiaa.models.cgiaa.scorer import CGIAAScorer, CGIAAScorerConfig
from mtpg_aiaa.models.cgiaa.small_tokenizer import write_small_gpt2_tokenizer
from mtpg_aiaa.models.cgiaa.toy_critiques import toy_critiques, toy_words
from mtpg_aiaa.engine.tasks.cgiaa.expert import encode_captions

log = logging.getLogger("quickstart-cgiaa")
MAX_TOKENS = 16  # the longest toy critique is 9 tokens with its "."


def tiny_clip_arch(image_size: int, patch_size: int = 8) -> LongCLIPArch:
    return LongCLIPArch(embed_dim=64, image_size=image_size, patch_size=patch_size, vision_width=96, vision_layers=3,
                        text_width=64, text_layers=2, context_length=77)  # fmt: skip


def load_pictures(table: pd.DataFrame, root: Path, image_size: int) -> torch.Tensor:
    """``[N, 3, S, S]``: every picture once, in the release's evaluation view."""
    transform = build_release_transform(image_size)
    return torch.stack([transform(load_rgb_image(root / name)) for name in table["image"]])


def train_vlap(clip: LongCLIP, pixels: torch.Tensor, critiques: list[dict[str, str]], steps: int, batch_size: int,
               seed: int, text: str = "per-attribute") -> float:  # fmt: skip
    """VLAP on the train pictures' toy critiques (temperature 0.07); returns the last loss.

    ``text="joined"``: symmetric InfoNCE on (picture, its four critiques joined) pairs.
    ``text="per-attribute"``: one ``class_infonce`` per attribute against that attribute's
    distinct critiques, averaged: every factor has its own loss term, and the many pictures
    that share a critique are positives of it, not negatives (docs/cgiaa.md).
    """
    if text == "joined":
        tokens = clip_tokens([" ".join(row[a] for a in ATTRIBUTES) for row in critiques])
    elif text == "per-attribute":
        classes = {a: sorted({row[a] for row in critiques}) for a in ATTRIBUTES}
        labels = torch.tensor([[classes[a].index(row[a]) for a in ATTRIBUTES] for row in critiques])
        tokens = clip_tokens([c for a in ATTRIBUTES for c in classes[a]])  # every distinct critique, once
        bounds = np.cumsum([0] + [len(classes[a]) for a in ATTRIBUTES]).tolist()
    else:
        raise ValueError(f"VLAP text must be 'joined' or 'per-attribute', got {text!r}")
    # The token table stays at its random start: the toy critiques use ~40 of its 49408 rows,
    # and updating all of them (AdamW, dense gradient) was half the time of a VLAP step.
    clip.token_embedding.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in clip.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    clip.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        index = torch.randperm(len(critiques), generator=generator)[:batch_size]
        image = clip.encode_image(pixels[index])
        if text == "joined":
            loss = symmetric_infonce(image, clip.encode_text(tokens[index]))
        else:
            texts = clip.encode_text(tokens)
            loss = torch.stack([class_infonce(image, texts[bounds[k] : bounds[k + 1]], labels[index, k])
                                for k in range(len(ATTRIBUTES))]).mean()  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            log.info("VLAP step %d: loss %.3f", step, float(loss.detach()))
    return float(loss.detach())


def clip_tokens(texts: list[str]) -> torch.Tensor:
    """CLIP's 77-token ids, cut after the longest text's EOT (exact: ``trim_text_tokens``); the
    toy critiques are ~10 tokens, so this skips most of the text tower's work."""
    from mtpg_aiaa.backbone.tokenizer import get_tokenizer

    return trim_text_tokens(get_tokenizer(77)(texts))


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
        if step % 100 == 0:
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
    split = factors["split"].to_numpy()
    # Every choice was made on val (--eval-split val); test is read once, for the final settings.
    train, held = np.flatnonzero(split == "train"), np.flatnonzero(split == args.eval_split)
    pixels = load_pictures(factors, Path(toy["image_root"]), args.image_size)
    scores = torch.tensor(factors["score"].to_numpy(), dtype=torch.float32)
    log.info("toy set: %d train / %d %s pictures (%.0f s)", len(train), len(held), args.eval_split,
             time.perf_counter() - started)  # fmt: skip

    torch.manual_seed(0)
    clip = LongCLIP(tiny_clip_arch(args.image_size, args.patch_size))
    vlap_loss = train_vlap(clip, pixels[train], [truth[i] for i in train], args.vlap_steps, 64, seed=0, text=args.vlap_text)
    clip.eval().requires_grad_(False)
    prefixes = torch.cat([clip_prefix(clip, pixels[s : s + 256]) for s in range(0, len(pixels), 256)])
    save_file(clip.state_dict(), out / "clip.safetensors")  # the VLAP-trained tiny CLIP, for later looks
    log.info("VLAP: %d steps, last loss %.3f (%.0f s)", args.vlap_steps, vlap_loss, time.perf_counter() - started)

    tokenizer = load_gpt2_tokenizer(write_small_gpt2_tokenizer(out / "tokenizer", toy_words()))
    experts = {}
    for a in ATTRIBUTES:
        experts[a] = train_expert(prefixes[train], [truth[i][a] for i in train], tokenizer, args.expert_steps, 64, seed=1)
        log.info("expert %s trained (%.0f s)", a, time.perf_counter() - started)
    generator = CritiqueGenerator(clip, experts, tokenizer).eval()
    # MAP's head learns from the scores of the first --map-pictures train pictures (a random
    # subset: splits are a permutation), fewer than the experts' critiques, as in CG-IAA where
    # the experts learn from a critique corpus; it is read on the held-out pictures.
    scored = train[: args.map_pictures] if args.map_pictures > 0 else train
    used = np.concatenate([train, held])
    critiques = generator.critique_prefixes(prefixes[used], beam_size=5, max_steps=MAX_TOKENS, batch_size=256)
    generated: list[dict[str, str]] = [{} for _ in truth]
    for i, row in zip(used, critiques):
        generated[i] = row
    write_critique_csv([{"image": factors["image"][i], **generated[i]} for i in sorted(used)], out / "critiques.csv")
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
        scorer.eval().requires_grad_(False)
        scorer.norm.requires_grad_(True)
        scorer.head.requires_grad_(True)
        features = map_features(scorer, pixels[used], [generated[i] for i in used])
        for seed in range(args.seeds):
            train_head(scorer, features[: len(scored)], scores[scored], args.map_epochs, seed)
            predictions[name].append(predict_head(scorer, features[len(train) :]))
    target = scores[held].numpy()
    results = {
        "eval_split": args.eval_split,
        "pictures": {"train": len(train), "map_scored": len(scored), args.eval_split: len(held)},
        "vlap_last_loss": vlap_loss,
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
        lines.append(f"{label} - image-only: {boot['diff']:+.3f} SRCC, 95 % CI [{boot['ci_low']:+.3f}, "
                     f"{boot['ci_high']:+.3f}], share of resamples <= 0: {boot['p_le_0']:.3f}  ")
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
