"""Inference speed: a literal reading of the released forward vs our path, side by side.

Literal (as the authors' test loop runs it): the five level prompts tokenized and
encoded again for every batch, the fusion computed twice (the released loop repeats it
on identical inputs), descriptions encoded at the full 248 tokens, under ``no_grad``.
Ours: prompt features cached per set of weights, one fusion pass, descriptions cut after
the batch's longest EOT, ``inference_mode``, and on CUDA the fused attention (one SDPA call
per block, the text tower with ``is_causal``; ``backbone/attention.py``) where the literal
path keeps open_clip's ``MultiheadAttention`` with the float causal mask, as the release
runs. On CUDA the backbone is in fp16 for both paths, as the authors' loader runs it.

Both paths get identical random weights and inputs; the script asserts equal outputs
(max |diff| <= 1e-5 in fp32) before reporting images/s (batches timed in alternation)
and the peak memory of one batch.

    python scripts/benchmark_inference.py                      # LongCLIP-B-16, CPU
    python scripts/benchmark_inference.py --backbone LongCLIP-L-14 --device cuda
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mtpg_aiaa.backbone.attention import attention_as
from mtpg_aiaa.backbone.convert import cast_like_upstream
from mtpg_aiaa.device import resolve_device
from mtpg_aiaa.models.mtpg.model import MTPGAIAA, MTPGConfig, build_mtpg
from mtpg_aiaa.models.mtpg.prompts import level_prompts

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
    with attention_as(model, "module"):  # open_clip's attention with the float causal mask, as released
        return _literal_forward(model, images, descriptions)


def _literal_forward(model: MTPGAIAA, images: torch.Tensor, descriptions: list[str]) -> torch.Tensor:
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
    return model.score_tensors(images, tokens)["probs"]


def wide_forward(model: MTPGAIAA, images: torch.Tensor, descriptions: list[str], group_size: int = 16) -> torch.Tensor:
    """Ours at full width: every image and description of the wide batch encoded in one
    pass, then the released fusion over consecutive groups of ``group_size`` (the authors'
    batch-16 outputs; ``MTPGAIAA.score_in_groups``)."""
    tokens = model.tokenizer(descriptions).to(images.device)
    return model.score_in_groups(images, tokens, group_size)["probs"]


PATHS = {"literal": literal_forward, "ours": our_forward}


class PathsDisagree(RuntimeError):
    """The two paths gave different level probabilities: no speed figure is reported."""


def check_paths_agree(model: MTPGAIAA, images: torch.Tensor, descriptions: list[str], tolerance: float,
                      paths: dict = PATHS) -> float:  # fmt: skip
    """Max |diff| of the level probabilities of ``paths["literal"]`` and ``paths["ours"]`` on
    one batch; raises :class:`PathsDisagree` above ``tolerance`` or on NaN (an exception, not
    an ``assert``, so ``python -O`` keeps the check)."""
    with torch.inference_mode():
        reference = paths["literal"](model, images, descriptions)
        ours = paths["ours"](model, images, descriptions)
    max_diff = (reference.float() - ours.float()).abs().max().item()
    if not max_diff <= tolerance:
        raise PathsDisagree(f"paths disagree: max |diff| {max_diff:.2e} > {tolerance}")
    return max_diff


def _run(forward, model, images, descriptions) -> None:
    context = torch.no_grad if forward is literal_forward else torch.inference_mode
    with context():
        forward(model, images, descriptions)
    if images.device.type == "cuda":
        torch.cuda.synchronize()


def time_paths(paths: dict, model, batches) -> dict[str, float]:
    """Images/s of each path, timed batch by batch in alternation (A, B, A, B, ...) after a
    warm-up of each, so a machine that gets busier or quieter affects both alike."""
    seconds = dict.fromkeys(paths, 0.0)
    for forward in paths.values():
        _run(forward, model, *batches[0])  # warm-up (and fills our prompt cache)
    for images, descriptions in batches[1:]:
        for name, forward in paths.items():
            start = time.perf_counter()
            _run(forward, model, images, descriptions)
            seconds[name] += time.perf_counter() - start
    n_images = sum(len(images) for images, _ in batches[1:])
    return {name: n_images / total for name, total in seconds.items()}


def time_wide(model, batches, group_size: int, tolerance: float) -> dict:
    """Images/s of ``wide_forward`` on the timed batches joined into one wide batch (after a
    warm-up call at that width), and its max |diff| to the literal path batch by batch."""
    images = torch.cat([images for images, _ in batches[1:]])
    descriptions = [text for _, texts in batches[1:] for text in texts]
    _run(wide_forward, model, images, descriptions)  # warm-up at this width
    start = time.perf_counter()
    _run(wide_forward, model, images, descriptions)
    seconds = time.perf_counter() - start
    with torch.inference_mode():
        got = wide_forward(model, images, descriptions, group_size).float()
        expected = torch.cat([literal_forward(model, *batch).float() for batch in batches[1:]])
    max_diff = (got - expected).abs().max().item()
    assert max_diff <= tolerance, f"wide path disagrees with the literal path: max |diff| {max_diff:.2e} > {tolerance}"
    return {"images_per_s": len(images) / seconds, "width": len(images), "max_abs_diff": max_diff}


def peak_memory_mb(path: str, args: argparse.Namespace, model=None, batch=None) -> float:
    """Peak memory of one batch of ``path`` above the level before it.

    CUDA: the allocator's peak, in this process. CPU: a fresh interpreter per path
    (``--memory-of PATH``) builds the same seeded model and inputs and reports its peak
    resident set above its size before the batch, so neither path inherits the other's heap.
    """
    if model is not None and batch is not None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _run(PATHS[path], model, *batch)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    command = [sys.executable, __file__, "--memory-of", path, "--backbone", args.backbone,
               "--batch-size", str(args.batch_size), "--device", "cpu", "--threads", str(torch.get_num_threads())]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def _measure_memory_here(path: str, model, batch) -> None:
    """Print the peak RSS (MB) above the pre-batch level, sampled every millisecond."""
    _run(PATHS[path], model, *batch)  # warm-up: our prompt cache, allocator pools
    base_kb, peak_kb, done = _rss_kb(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak_kb[0] = max(peak_kb[0], _rss_kb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _run(PATHS[path], model, *batch)
    done.set()
    sampler.join()
    print(max(peak_kb[0] - base_kb, 0) / 1024)


def _rss_kb() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 // 1024


def build_model(config: MTPGConfig, device: torch.device) -> MTPGAIAA:
    """``build_mtpg(config)`` with its parameters created on ``device`` directly: the fp32
    initialisation of a Long-CLIP-L on a CPU takes many seconds. Falls back to building on
    the CPU and moving the model when the device build fails."""
    try:
        with torch.device(device):
            return build_mtpg(config)
    except Exception as error:  # noqa: BLE001 - any failure: the slow path still works
        print(f"building on {device} failed ({type(error).__name__}: {error}); building on the CPU", file=sys.stderr)
        return build_mtpg(config).to(device)


def _stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None, log=_stderr_progress) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="LongCLIP-B-16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per path")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory (CPU: a fresh process per path)")
    parser.add_argument("--memory-of", choices=sorted(PATHS), help=argparse.SUPPRESS)  # internal: one path's memory
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(MTPGConfig(backbone=args.backbone), device).eval()
    if device.type == "cuda":
        cast_like_upstream(model.backbone)  # both paths: the authors' fp16 backbone on CUDA
    log(f"built {args.backbone} on {device} in {time.perf_counter() - start:.1f} s")
    generator = torch.Generator().manual_seed(0)
    size = model.backbone.arch.image_size
    batches = [
        (torch.randn(args.batch_size, 3, size, size, generator=generator).to(device),
         make_descriptions(args.batch_size, generator))
        for _ in range(args.batches + 1)
    ]  # fmt: skip
    if args.memory_of:
        _measure_memory_here(args.memory_of, model, batches[0])
        return

    # fp32 on the CPU: the paths agree to rounding. fp16 on CUDA keeps ~3 digits, and the level
    # logits are cosines times exp(logit_scale) (~14), so two fp16 paths that add in another
    # order (248 tokens vs trimmed ones, the float mask vs flash attention) may differ by a few
    # 1e-3 in probability; 1e-2 still fails a path that attends to the wrong tokens.
    tolerance = 1e-5 if device.type == "cpu" else 1e-2
    max_diff = check_paths_agree(model, *batches[0], tolerance=tolerance)

    log(f"outputs equal at batch {args.batch_size} (max |diff| {max_diff:.1e})")
    tokens = model.tokenizer(batches[0][1])
    longest = int(tokens.argmax(dim=-1).max()) + 1
    start = time.perf_counter()
    speed = time_paths(PATHS, model, batches)
    log(f"timed literal and ours at batch {args.batch_size} in {time.perf_counter() - start:.1f} s")
    wide = time_wide(model, batches, args.batch_size, tolerance)
    log(f"timed ours at width {wide['width']}: {wide['images_per_s']:.1f} img/s (max |diff| {wide['max_abs_diff']:.1e})")
    on_gpu = device.type == "cuda"
    memory = {name: float("nan") if args.no_memory else
              peak_memory_mb(name, args, model if on_gpu else None, batches[0] if on_gpu else None)
              for name in PATHS}  # fmt: skip
    literal = {"images_per_s": speed["literal"], "peak_mem_mb": memory["literal"]}
    fast = {"images_per_s": speed["ours"], "peak_mem_mb": memory["ours"]}
    best = max(fast["images_per_s"], wide["images_per_s"])
    result = {
        "backbone": args.backbone, "device": str(device), "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(), "max_abs_diff": max_diff,
        "description_tokens_longest_in_first_batch": longest,
        "literal": literal, "ours": fast, "ours_wide": wide,
        "speedup_batch_calls": fast["images_per_s"] / literal["images_per_s"],
        "speedup_wide": wide["images_per_s"] / literal["images_per_s"],
        "speedup": best / literal["images_per_s"],  # ours, the faster of its two modes
    }  # fmt: skip
    print(f"{args.backbone} on {device}, batch {args.batch_size}, {args.batches} timed batches, "
          f"{torch.get_num_threads()} threads; outputs equal (max |diff| {max_diff:.1e})")  # fmt: skip
    print(f"{'path':<10} {'images/s':>9} {'peak MB':>9}")
    for name, row in (("literal", literal), ("ours", fast)):
        print(f"{name:<10} {row['images_per_s']:9.2f} {row['peak_mem_mb']:9.1f}")
    print(f"{'ours wide':<10} {wide['images_per_s']:9.2f} {'-':>9}   ({wide['width']} rows encoded at once, "
          f"fusion over groups of {args.batch_size}; max |diff| to literal {wide['max_abs_diff']:.1e})")  # fmt: skip
    print(f"speed-up: {result['speedup_batch_calls']:.2f}x batch by batch, {result['speedup_wide']:.2f}x at full width")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
