"""Critique generation speed: the release's beam search loop vs ours, side by side.

Literal (ClipCap ``generate_beam`` as CG-IAA runs it): one image at a time, the whole
prefix + text sequence re-run through GPT-2 at every step (no key/value cache), logits
for every position. Ours: ``--batch`` images decoded together, GPT-2's key/value cache,
finished images dropped from the batch. Same expert (random weights, GPT-2 small: 12
layers, width 768, vocabulary 50257; the released mapper: 40 + 40 tokens, 8 layers),
same prefixes, beam 5; the script asserts that both give the same tokens for every image
the literal loop ran on, then reports critiques/s of each.

Random weights never emit "." reliably, so every beam runs to ``--max-steps`` tokens (a
worst case for both; released critiques are mostly 10-30 tokens).

    nice -n 10 python scripts/benchmark_critique.py --max-steps 30 --images 8 --literal-images 2
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from mtpg_aiaa.models.cgiaa.beam import RELEASED_BEAM_SIZE, RELEASED_MAX_STEPS, beam_search, literal_beam_search
from mtpg_aiaa.models.cgiaa.expert import CritiqueExpert, GPT2Sizes
from mtpg_aiaa.models.cgiaa.mapper import MapperConfig

GPT2_STOP = 13  # "." in GPT-2's vocabulary


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="images critiqued by our search")
    parser.add_argument("--literal-images", type=int, default=2, help="the first N of them also by the literal loop")
    parser.add_argument("--batch", type=int, default=8, help="images per batch in our search")
    parser.add_argument("--beam-size", type=int, default=RELEASED_BEAM_SIZE)
    parser.add_argument("--max-steps", type=int, default=RELEASED_MAX_STEPS)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", action="store_true", help="a 2-layer width-128 expert (for a quick check)")
    return parser.parse_args(argv)


def build_expert(small: bool, device: str) -> CritiqueExpert:
    torch.manual_seed(0)
    if small:
        expert = CritiqueExpert(GPT2Sizes(vocab_size=1000, n_embd=128, n_layer=2, n_inner=512),
                                MapperConfig(embed_dim=128, num_layers=2, mlp_dim=256))  # fmt: skip
    else:
        expert = CritiqueExpert()  # GPT-2 small + the released mapper
    return expert.to(device).eval()


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    expert = build_expert(args.small, args.device)
    generator = torch.Generator().manual_seed(1)
    features = F.normalize(torch.randn(args.images, expert.mapper_config.clip_dim, generator=generator), dim=-1)
    with torch.no_grad():
        prefixes = expert.prefix_embeddings(features.to(args.device))
    options = dict(beam_size=args.beam_size, max_steps=args.max_steps)

    start = time.perf_counter()
    literal = [literal_beam_search(expert.gpt, prefixes[i : i + 1], GPT2_STOP, **options) for i in range(args.literal_images)]
    literal_seconds = time.perf_counter() - start

    start = time.perf_counter()
    ours = []
    for first in range(0, args.images, args.batch):
        ours += beam_search(expert.gpt, prefixes[first : first + args.batch], GPT2_STOP, **options)
    ours_seconds = time.perf_counter() - start

    same = all(a.tokens == b.tokens for a, b in zip(literal, ours))
    if not same:
        raise SystemExit("the two searches gave different tokens")
    literal_rate, ours_rate = args.literal_images / literal_seconds, args.images / ours_seconds
    report = {
        "expert_parameters_M": round(sum(p.numel() for p in expert.parameters()) / 1e6, 1),
        "beam_size": args.beam_size, "max_steps": args.max_steps, "tokens_per_critique": len(ours[0].best),
        "threads": args.threads, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "literal_critiques": args.literal_images, "literal_seconds": round(literal_seconds, 2),
        "literal_critiques_per_s": round(literal_rate, 4),
        "ours_critiques": args.images, "ours_batch": args.batch, "ours_seconds": round(ours_seconds, 2),
        "ours_critiques_per_s": round(ours_rate, 4),
        "speedup": round(ours_rate / literal_rate, 1), "same_tokens": same,
    }  # fmt: skip
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
