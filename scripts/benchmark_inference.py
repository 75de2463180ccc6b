"""Inference speed: a literal reading of the released forward vs our path, side by side.

Literal (as the authors' test loop runs it): the five level prompts tokenized and
encoded again for every batch, the fusion computed twice (the released loop repeats it
on identical inputs), descriptions encoded at the full 248 tokens, under ``no_grad``.
Ours: prompt features cached per set of weights, one fusion pass, descriptions cut after
the batch's longest EOT, ``inference_mode``; on CUDA the backbone in fp16 for both paths,
as the authors' loader runs it.

Both paths get identical random weights and inputs; the script asserts equal outputs
(max |diff| <= 1e-5 in fp32) before reporting images/s and peak memory.

    python scripts/benchmark_inference.py                      # LongCLIP-B-16, CPU
    python scripts/benchmark_inference.py --backbone LongCLIP-L-14 --device cuda
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mtpg_aiaa.backbone.convert import cast_like_upstream
from mtpg_aiaa.evaluation import resolve_device
from mtpg_aiaa.model import MTPGAIAA, MTPGConfig, build_mtpg
from mtpg_aiaa.prompts import expected_score, level_prompts

# GalleryGPT-like sentences; descriptions of 60-200 words are drawn from them.
SENTENCES = (
    "The painting is executed in an expressive style with bold, thick brushstrokes.",
    "The composition is dominated by a central figure placed slightly off centre.",
    "Warm ochres and deep blues contrast across the canvas, creating a sense of depth.",
    "Soft, blended transitions in the background give way to sharp, precise lines.",
    "Light falls from the upper left, modelling the forms with gentle shadows.",
    "The overall balance is harmonious, drawing the viewer's gaze toward the horizon.",
)


def make_descriptions(batch: int, generator: torch.Generator) -> list[str]:
    lengths = torch.randint(5, 16, (batch,), generator=generator).tolist()
    return [" ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(n)) for i, n in enumerate(lengths)]


def literal_forward(model: MTPGAIAA, images: torch.Tensor, descriptions: list[str]) -> torch.Tensor:
    """The released forward read literally; returns level probabilities ``[B, 5]``."""
    backbone, fusion = model.backbone, model.fusion
    device = images.device
    text = model.tokenizer(descriptions).to(device)  # full 248 tokens
    prompts = model.tokenizer(level_prompts(model.config.prompts)).to(device)  # every batch
    image_f = F.normalize(backbone.encode_image(images.to(backbone.visual.conv1.weight.dtype)).float(), dim=-1)
    text_f = F.normalize(backbone.encode_text(text).float(), dim=-1)
    prompt_f = F.normalize(backbone.encode_text(prompts).float(), dim=-1)
    for _ in range(2):  # the released loop runs the fusion twice on identical inputs
        fused = fusion(image_f, text_f)
    return (model.logit_scale.exp() * fused @ prompt_f.T).softmax(dim=-1)


def our_forward(model: MTPGAIAA, images: torch.Tensor, descriptions: list[str]) -> torch.Tensor:
    tokens = model.tokenizer(descriptions).to(images.device)
    return model(images, tokens)["probs"]


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak_bytes = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base, self._peak, self._stop = _rss(), _rss(), threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, _rss()) - self._base


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def time_path(forward, model, batches, device, mode) -> dict:
    """Mean images/s over ``batches`` after one warm-up batch, and peak memory."""
    context = torch.inference_mode if mode == "inference" else torch.no_grad
    with context():
        forward(model, *batches[0])  # warm-up (and fills our prompt cache)
        with PeakMemory(device) as memory:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for images, descriptions in batches:
                forward(model, images, descriptions)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
    n_images = sum(len(images) for images, _ in batches)
    return {"images_per_s": n_images / seconds, "peak_mem_mb": memory.peak_bytes / 2**20, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="LongCLIP-B-16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per path")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_mtpg(MTPGConfig(backbone=args.backbone)).eval()
    if device.type == "cuda":
        cast_like_upstream(model.backbone)  # both paths: the authors' fp16 backbone on CUDA
    model.to(device)
    generator = torch.Generator().manual_seed(0)
    size = model.backbone.arch.image_size
    batches = [
        (torch.randn(args.batch_size, 3, size, size, generator=generator).to(device),
         make_descriptions(args.batch_size, generator))
        for _ in range(args.batches + 1)
    ]  # fmt: skip

    with torch.inference_mode():
        reference = literal_forward(model, *batches[0])
        ours = our_forward(model, *batches[0])
    max_diff = (reference.float() - ours.float()).abs().max().item()
    tolerance = 1e-5 if device.type == "cpu" else 1e-3  # fp16 backbone on CUDA
    assert max_diff <= tolerance, f"paths disagree: max |diff| {max_diff:.2e} > {tolerance}"

    tokens = model.tokenizer(batches[0][1])
    longest = int(tokens.argmax(dim=-1).max()) + 1
    literal = time_path(literal_forward, model, batches[1:], device, mode="no_grad")
    fast = time_path(our_forward, model, batches[1:], device, mode="inference")
    result = {
        "backbone": args.backbone, "device": str(device), "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(), "max_abs_diff": max_diff,
        "description_tokens_longest_in_first_batch": longest,
        "literal": literal, "ours": fast, "speedup": fast["images_per_s"] / literal["images_per_s"],
    }  # fmt: skip
    print(f"{args.backbone} on {device}, batch {args.batch_size}, {args.batches} timed batches, "
          f"{torch.get_num_threads()} threads; outputs equal (max |diff| {max_diff:.1e})")  # fmt: skip
    print(f"{'path':<10} {'images/s':>9} {'peak MB':>9}")
    for name, row in (("literal", literal), ("ours", fast)):
        print(f"{name:<10} {row['images_per_s']:9.2f} {row['peak_mem_mb']:9.1f}")
    print(f"speed-up: {result['speedup']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
