"""What the parts of scripts/gpu_check.py share: progress lines, the part's JSON written as
figures come (``record``), sizes, FLOP counts and the measured matmul peak, generated test data.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

_PART_STARTED = time.perf_counter()


_PARTIAL: dict = {"status": "running", "figures": {}}
_PARTIAL_PATH: Path | None = None


def progress(message: str) -> None:
    """A progress line on stderr, flushed at once: a part stopped at its cap leaves in its
    log the last step it reached and the seconds since the part started."""
    print(f"[{time.perf_counter() - _PART_STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def record(figures: dict | None = None, **values) -> None:
    """Add ``figures`` and ``values`` to this part's JSON and write it at once, so a part
    stopped at its cap (or a run killed) keeps every figure measured before."""
    if figures:
        _PARTIAL["figures"].update(figures)
    _PARTIAL.update(values)
    if _PARTIAL_PATH is not None:
        temporary = _PARTIAL_PATH.with_suffix(".tmp")
        temporary.write_text(json.dumps(_PARTIAL, indent=2, default=str) + "\n")
        os.replace(temporary, _PARTIAL_PATH)


def build_on_device(config, device):
    """``build_mtpg(config)`` with its parameters created on ``device`` (no fp32 CPU init of
    a Long-CLIP-L, which takes many seconds); on any failure the CPU build moved there."""
    from benchmark_inference import build_model

    start = time.perf_counter()
    model = build_model(config, device)
    sync(device)
    progress(f"built {config.backbone} (fusion={config.fusion}) on {device} in {time.perf_counter() - start:.1f} s")
    return model


def stream_command(command: list[str], timeout: float, on_line=None) -> tuple[int | None, str]:
    """Run ``command``, copying its stdout and stderr to ours line by line as they come (so a
    part killed at its cap keeps them in its log), each line also to ``on_line``; returns
    (exit code or None when ``timeout`` ran out, the output)."""
    import threading

    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # fmt: skip
    lines: list[str] = []

    def copy() -> None:
        for line in process.stdout:
            lines.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()
            if on_line is not None:
                on_line(line)

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        reader.join(timeout=5)
        return None, "".join(lines)
    reader.join(timeout=5)
    return process.returncode, "".join(lines)
BAID_TRAIN_ROWS = 50_737
BAID_TEST_ROWS = 6_400


# -- sizes and FLOPs ---------------------------------------------------------------------
def sizes(quick: bool) -> dict:
    if quick:
        return {"backbone": "LongCLIP-tiny", "model_group": "tiny", "b16_batches": 2, "b256": 8, "b256_iters": 2,
                "test_images": 32, "image_wh": (320, 240), "train_batch": 4, "train_steps": 1, "train_rounds": 1,
                "epoch_rows": 512, "description_tokens": 40, "workers": 0}  # fmt: skip
    workers = min(12, max(1, len(os.sched_getaffinity(0)) - 2))
    return {"backbone": "LongCLIP-L-14", "model_group": "longclip_l", "b16_batches": 12, "b256": 256, "b256_iters": 6,
            "test_images": BAID_TEST_ROWS, "image_wh": (640, 480), "train_batch": 64, "train_steps": 5, "train_rounds": 2,
            "epoch_rows": BAID_TRAIN_ROWS, "description_tokens": 130, "workers": workers}  # fmt: skip


def transformer_gflop(width: int, layers: int, tokens: int) -> float:
    matmul = 2 * 12 * width**2 * tokens  # qkv + out projection (4 w^2) and the MLP (8 w^2)
    attention = 4 * tokens**2 * width  # scores and the weighted sum
    return layers * (matmul + attention) / 1e9


def sample_gflop(arch, description_tokens: int) -> dict:
    image_tokens = (arch.image_size // arch.patch_size) ** 2 + 1
    image = transformer_gflop(arch.vision_width, arch.vision_layers, image_tokens)
    text = transformer_gflop(arch.text_width, arch.text_layers, description_tokens)
    return {"image": image, "text": text, "total": image + text}


def matmul_peak_tflops(device, dtype) -> float:
    """The best of a few large matmuls: the device's practical peak for ``dtype``."""
    import torch

    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):
        sync(device)
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / 5)
    peak = 2 * n**3 / best / 1e12
    progress(f"matmul peak {dtype}: {peak:.1f} TFLOP/s")
    return peak


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def figure(value, target, unit: str, higher_is_better: bool = True, note: str = "") -> dict:
    met = None if value is None or target is None else (value >= target if higher_is_better else value <= target)
    row = {"value": value, "target": target, "unit": unit, "met": met}
    if note:
        row["note"] = note
    return row


def random_tokens(batch: int, length: int, seed: int = 0):
    """``[batch, length]`` token ids, each row ending with EOT at ``length - 1 - (row % 8)``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(batch, length, dtype=torch.long)
    tokens[:, 0] = 49406
    for row in range(batch):
        eot = max(2, length - 1 - row % 8)
        tokens[row, 1:eot] = torch.randint(1, 49000, (eot - 1,), generator=generator)
        tokens[row, eot] = 49407
    return tokens


# -- generated test data ---------------------------------------------------------------------
def _write_jpeg(job) -> None:
    import numpy as np
    from PIL import Image

    path, seed, (width, height) = job
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)  # painting-like: smooth colour fields
    image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def make_test_set(root: Path, count: int, wh: tuple[int, int]) -> Path:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import pandas as pd

    from benchmark_inference import SENTENCES

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    jobs = [(images / f"{i:05d}.jpg", i, wh) for i in range(count)]
    # spawn, not fork: the part has started CUDA (and its threads) already, and a forked copy
    # of such a process can deadlock; the workers import only this light module.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(os.sched_getaffinity(0)), mp_context=spawn) as pool:
        list(pool.map(_write_jpeg, jobs, chunksize=64))
    rows = [{"image": f"{i:05d}.jpg", "score": 1 + (i * 7919 % 900) / 100,
             "comment": " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(5 + i % 11))} for i in range(count)]  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "test.csv", index=False)
    return root / "test.csv"
