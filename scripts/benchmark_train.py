"""Stage-2 training speed: cached features vs images through a frozen backbone vs full fine-tuning.

Three setups, each built through the real code paths: ``configs/train.yaml`` composed with
overrides, ``build_training_model``, ``train.build_task``, the configured optimizer and
schedule, and the :class:`Trainer`'s own micro-step and optimizer step (autocast, grad
scaling, clipping, schedule). Batches come from a DataLoader over ``task.train_dataset``
with ``task.collate``, the trainer's sampler and the configured workers.

  cached           model.freeze=frozen, stage.feature_cache.enabled=true: the fusion and
                   the level prompts train on features stored on disk
  uncached-frozen  model.freeze=frozen, stage.feature_cache.enabled=false: images go
                   through the frozen backbone every step
  full             model.freeze=full, stage.feature_cache.enabled=false: everything trains
  full-compiled    full with trainer.compile=true (each backbone block through torch.compile;
                   not in the default list; its compile time is in its warm-up, ``warmup_s``)

The uncached setups run with ``stage.augment=false`` (``--augment`` turns it on): the
deterministic eval view the cache stores, so all three train on the same inputs, in the
same order, from the same weights, and the cached and uncached-frozen losses agree step
by step (printed as a check). Each setup takes two untimed warm-up steps, then rounds of
``--steps`` optimizer steps run in alternation (A, B, C, A, B, C, ...), so a machine that
gets busier or quieter affects all alike. Each round starts the setup's loader afresh and
lets its workers fill the pipeline (one batch per worker, discarded) before the clock
starts, so no setup's workers prefetch while another is timed. Steps/s counts optimizer
steps, data loading included; images/s = steps/s x batch x accumulation.

Peak memory is the most a training step holds above the level before the first step (the
model, task and optimizer built, a batch loaded): activations, gradients, optimizer state
and workspace, over the two warm-up steps. CUDA: ``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats``. CPU: the peak resident set of a fresh interpreter per
setup (``--memory-of``), so no setup inherits another's heap. The one-off feature-cache
build is reported on its own (images/s). The backbone starts from random weights
(``model.backbone_weights=null``; speed does not depend on the values); pass
``model.backbone_weights=PATH`` to load real ones. Everything the run writes (run dirs,
generated images, the cache unless ``--cache-dir``) lives in a temporary directory.

    python scripts/benchmark_train.py                                # model=toy data=toy, CPU
    python scripts/benchmark_train.py --model longclip_l --data smoke --device cuda
    python scripts/benchmark_train.py --model longclip_l --data baid data.root=data/BAID \\
        data.descriptions_csv=data/BAID/descriptions.csv --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):  # train.py lives in the repository root, make_smoke_data.py here
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from make_smoke_data import make_image, write_smoke_data  # noqa: E402
from train import build_task  # noqa: E402

from mtpg_aiaa.backbone import get_arch  # noqa: E402
from mtpg_aiaa.data.toy import ensure_dataset  # noqa: E402
from mtpg_aiaa.engine.builders import build_training_model  # noqa: E402
from mtpg_aiaa.engine.seeding import seed_everything  # noqa: E402
from mtpg_aiaa.engine.trainer import Trainer, TrainerConfig  # noqa: E402
from mtpg_aiaa.device import resolve_device  # noqa: E402

SETUPS = {
    "cached": ["model.freeze=frozen", "stage.feature_cache.enabled=true", "stage.augment=false"],
    "uncached-frozen": ["model.freeze=frozen", "stage.feature_cache.enabled=false"],
    "full": ["model.freeze=full", "stage.feature_cache.enabled=false"],
    "full-compiled": ["model.freeze=full", "stage.feature_cache.enabled=false", "trainer.compile=true"],
}
DEFAULT_SETUPS = ("cached", "uncached-frozen", "full")
WARMUP_STEPS = 2  # untimed; on CUDA also the peak-memory window


@dataclass
class Setup:
    """One setup's model, task, trainer and loader, and what its timed steps took."""

    name: str
    cfg: DictConfig
    trainer: Trainer
    loader: DataLoader
    epoch: int = 0
    batches_used: int = 0  # of the current epoch
    seconds: float = 0.0
    steps: int = 0
    losses: list = field(default_factory=list)  # device tensors while timing; floats after ``summarise``
    peak_mem_mb: float | None = None
    task_build_s: float = 0.0  # train.build_task: for `cached`, hashing the backbone and building the cache
    warmup_s: float = 0.0  # the untimed warm-up steps (with trainer.compile: the compile)

    @property
    def task(self):
        return self.trainer.task


def _quote(path: Path | str) -> str:
    return "'" + str(path) + "'"  # a Hydra override value that may hold any path character but '


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides)


def build_setup(name: str, overrides: list[str]) -> Setup:
    """Model, task (the cache built here for ``cached``), optimizer, schedule and trainer,
    as ``train.train`` builds them, for ``overrides`` plus the setup's own."""
    cfg = compose_config([*overrides, *SETUPS[name]])
    seed_everything(cfg.seed)  # the same initial weights in every setup
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    model = build_on(device, cfg)
    print(f"[benchmark_train] {name}: model built on {device} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    start = time.perf_counter()
    task = build_task(cfg, model)
    task_build_s = time.perf_counter() - start
    print(f"[benchmark_train] {name}: task built in {task_build_s:.1f} s", file=sys.stderr, flush=True)
    optimizer = instantiate(cfg.optim)(model)
    trainer_cfg = TrainerConfig(**{k: v for k, v in cfg.trainer.items() if k in TrainerConfig.__dataclass_fields__},
                                seed=cfg.seed)  # fmt: skip
    logger = instantiate(cfg.logger)(run_dir=Path(cfg.paths.run_dir) / name)
    trainer = Trainer(model, task, optimizer, None, trainer_cfg, Path(cfg.paths.run_dir) / name, logger,
                      OmegaConf.to_container(cfg, resolve=True), device)  # fmt: skip
    trainer.scheduler = instantiate(cfg.sched)(optimizer, total_steps=trainer.total_steps)
    # As Trainer._run_epoch builds its loader; the sampler is re-positioned every round.
    on_device = getattr(task.train_dataset, "on_device", False)
    loader = DataLoader(task.train_dataset, batch_size=trainer_cfg.batch_size, sampler=trainer.sampler,
                        drop_last=True, num_workers=0 if on_device else trainer_cfg.num_workers, collate_fn=task.collate,
                        pin_memory=device.type == "cuda" and not on_device, persistent_workers=False)  # fmt: skip
    model.train()
    return Setup(name, cfg, trainer, loader, task_build_s=task_build_s)


def build_on(device: torch.device, cfg: DictConfig):
    """The training model with its parameters created on ``device`` when that is a GPU (the
    fp32 CPU initialisation of a Long-CLIP-L takes many seconds); on the CPU, or when the
    device build fails, built on the CPU and moved."""
    if device.type == "cuda":
        try:
            with torch.device(device):
                return build_training_model(cfg.model, cfg.init_from)
        except Exception as error:  # noqa: BLE001 - the slow path still works
            print(f"[benchmark_train] building on {device} failed ({error}); building on the CPU", file=sys.stderr)
    return build_training_model(cfg.model, cfg.init_from).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def start_round(setup: Setup, steps: int):
    """A fresh loader iterator for ``steps`` optimizer steps, its workers' first batches
    discarded so the pipeline is full when the clock starts (a new epoch when this one
    has too few batches left)."""
    cfg = setup.trainer.cfg
    needed = cfg.num_workers + steps * cfg.accumulate
    per_epoch = len(setup.task.train_dataset) // cfg.batch_size
    if needed > per_epoch:
        raise ValueError(f"{setup.name}: the training set gives {per_epoch} batches of {cfg.batch_size}; a round "
                         f"needs {needed} ({cfg.num_workers} to fill the workers + {steps} steps x "
                         f"{cfg.accumulate}): use more images (--images) or fewer steps")  # fmt: skip
    if setup.batches_used + needed > per_epoch:
        setup.epoch, setup.batches_used = setup.epoch + 1, 0
    setup.trainer.sampler.set_epoch(setup.epoch, skip=setup.batches_used * cfg.batch_size)
    set_epoch = getattr(setup.task.train_dataset, "set_epoch", None)
    if set_epoch:
        set_epoch(setup.epoch)
    setup.batches_used += needed
    batches = iter(setup.loader)
    for _ in range(cfg.num_workers):
        next(batches)
    return batches


def train_steps(setup: Setup, batches, steps: int) -> None:
    """``steps`` optimizer steps through the trainer's own micro-step and optimizer step."""
    trainer = setup.trainer
    for _ in range(steps):
        for _ in range(trainer.cfg.accumulate):
            losses = trainer._micro_step(next(batches))
        trainer._optimizer_step()
        setup.losses.append(losses["loss"])  # left on the device: reading it here would sync every step


def warm_up(setup: Setup) -> None:
    """Two untimed steps; on CUDA the allocator's peak over them above the level before."""
    device = setup.trainer.device
    batches = start_round(setup, WARMUP_STEPS)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    train_steps(setup, batches, WARMUP_STEPS)
    _sync(device)
    setup.warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        setup.peak_mem_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    del batches  # shuts its workers down before another setup runs
    print(f"[benchmark_train] {setup.name}: warm-up ({WARMUP_STEPS} steps) done in {setup.warmup_s:.1f} s",
          file=sys.stderr, flush=True)  # fmt: skip


def timed_round(setup: Setup, steps: int) -> None:
    batches = start_round(setup, steps)
    device = setup.trainer.device
    _sync(device)
    start = time.perf_counter()
    train_steps(setup, batches, steps)
    _sync(device)
    setup.seconds += time.perf_counter() - start
    setup.steps += steps
    del batches
    print(f"[benchmark_train] {setup.name}: {setup.steps} steps timed, {setup.seconds:.2f} s", file=sys.stderr, flush=True)


# -- CPU memory: one fresh interpreter per setup ----------------------------------------
def cpu_peak_memory_mb(name: str, overrides: list[str], threads: int) -> float:
    command = [sys.executable, __file__, "--memory-of", name, "--threads", str(threads),
               "--hydra-overrides", json.dumps(overrides)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"memory run of {name} failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def _measure_memory_here(name: str, overrides: list[str]) -> None:
    """Print the peak RSS (MB) of the warm-up steps above the level before them."""
    setup = build_setup(name, [*overrides, "trainer.num_workers=0"])
    batches = start_round(setup, WARMUP_STEPS)
    loaded = [next(batches) for _ in range(WARMUP_STEPS * setup.trainer.cfg.accumulate)]
    peak_mb = _peak_rss_mb(lambda: train_steps(setup, iter(loaded), WARMUP_STEPS))
    print(peak_mb)


def _peak_rss_mb(work) -> float:
    """Peak resident set (MB) while ``work()`` runs, above the level before it: the
    kernel's high-water mark (``VmHWM``), reset to the current size first, so it is exact
    where sampling could miss a short peak. The resident set also holds file-backed pages
    (torch's libraries) that the kernel may drop under page-cache pressure while the work
    runs; what it dropped is added back, so a busy host does not hide the work's memory
    (then an upper bound: pages dropped after the peak are added too)."""
    base_kb, file_before_kb = _status_kb("VmRSS"), _status_kb("RssFile")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
    except OSError as error:
        raise RuntimeError(f"cannot reset the peak resident set ({error}); run with --no-memory") from error
    work()
    file_dropped_kb = max(file_before_kb - _status_kb("RssFile"), 0)
    return max(_status_kb("VmHWM") - base_kb + file_dropped_kb, 0) / 1024


def _status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name}")


# -- data ------------------------------------------------------------------------------
def prepare_data(args: argparse.Namespace, cfg: DictConfig, work: Path, images: int) -> tuple[list[str], str]:
    """Overrides that follow the user's to name the training rows, and a description.
    ``--data smoke`` writes ``images`` generated paintings at the model's image size;
    otherwise the training CSV is cut to its first ``images`` rows (0: all) in ``work``."""
    if args.data == "smoke":
        size = get_arch(cfg.model.backbone).image_size
        smoke = write_smoke_data(work / "smoke", num_images=images)
        rng = np.random.default_rng([0, size])
        for path in sorted(smoke["image_root"].iterdir()):  # write_smoke_data draws 96 px images
            make_image(rng, size).save(path, quality=90)
        csv, root = _quote(smoke["csv"]), _quote(smoke["image_root"])
        return [f"data.csv={csv}", f"data.train_csv={csv}", f"data.image_root={root}"], \
            f"smoke: {images} generated {size} px images"  # fmt: skip
    ensure_dataset(cfg.data)  # data=toy: built on first use, as train.py does
    if not cfg.data.train_csv:
        raise ValueError("data.train_csv is not set: pick a data group (--data baid data.root=...) or set it")
    table = pd.read_csv(cfg.data.train_csv)
    if images and images < len(table):
        subset = work / "train_subset.csv"
        table.head(images).to_csv(subset, index=False)
        return [f"data.train_csv={_quote(subset)}"], f"{args.data}: first {images} of {len(table)} training rows"
    return [], f"{args.data}: {len(table)} training rows"


def images_needed(args: argparse.Namespace, workers: int, accumulate: int) -> int:
    """Enough rows that no setup sees an image twice (warm-up and rounds)."""
    batches = WARMUP_STEPS * accumulate + workers + args.rounds * (args.steps * accumulate + workers)
    return args.batch_size * batches


# -- report ----------------------------------------------------------------------------
def environment(device: torch.device) -> dict:
    env = {"device": str(device), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpu_count": len(os.sched_getaffinity(0))}  # fmt: skip
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def summarise(setup: Setup) -> dict:
    setup.losses = [float(loss) for loss in setup.losses]
    cfg, trainer = setup.cfg, setup.trainer
    images_per_step = cfg.trainer.batch_size * cfg.trainer.accumulate
    steps_per_s = setup.steps / setup.seconds
    inputs = "cached features" if setup.task.cached else f"images, {'augmented' if cfg.stage.augment else 'eval view'}"
    return {
        "overrides": SETUPS[setup.name], "cached": bool(setup.task.cached), "inputs": inputs,
        "augment": bool(cfg.stage.augment) and not setup.task.cached, "freeze": cfg.model.freeze,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "timed_steps": setup.steps, "seconds": setup.seconds,
        "steps_per_s": steps_per_s, "images_per_s": steps_per_s * images_per_step,
        "peak_mem_mb": setup.peak_mem_mb, "last_loss": setup.losses[-1], "warmup_s": setup.warmup_s,
    }  # fmt: skip


def print_report(result: dict) -> None:
    env, run = result["environment"], result["run"]
    where = env.get("gpu", f"{env['cpu_count']} CPUs")
    print(f"model={run['model']} ({run['backbone']}, fusion={run['fusion']}, {run['image_size']} px, "
          f"{run['weights']}), data={run['data']}")
    print(f"{env['device']} ({where}), torch {env['torch']}, {env['torch_threads']} threads, "
          f"{run['workers']} loader workers, precision {run['autocast']}")
    print(f"batch {run['batch_size']} x accumulate {run['accumulate']}, {run['rounds']} rounds x {run['steps']} "
          f"steps per setup in alternation after {WARMUP_STEPS} warm-up steps")  # fmt: skip
    print(f"{'setup':<16} {'inputs':<18} {'trainable':>10} {'steps/s':>8} {'images/s':>9} {'peak MB':>8}")
    for name, row in result["setups"].items():
        peak = "-" if row["peak_mem_mb"] is None else f"{row['peak_mem_mb']:.1f}"
        print(f"{name:<16} {row['inputs']:<18} {row['trainable_params'] / 1e6:9.2f}M {row['steps_per_s']:8.2f} "
              f"{row['images_per_s']:9.1f} {peak:>8}")  # fmt: skip
    build = result.get("cache_build")
    if build:
        rate = f"{build['images_per_s']:.1f} images/s" if build["built"] else "nothing to build"
        print(f"feature cache (one-off): {build['built']} entries built, {build['reused']} reused in "
              f"{build['seconds']:.1f} s ({rate}, batch {build['batch_size']}); the cached task took "
              f"{build['task_build_s']:.1f} s in all (backbone hash, probe, build)")  # fmt: skip
    ratios = result["ratios"]
    if ratios:
        print("; ".join(f"{name}: {value:.2f}x" for name, value in ratios.items()) + " (steps/s)")
    check = result["loss_check"]
    if check:
        print(f"cached vs uncached-frozen losses over {check['steps']} steps (same weights, inputs and order): "
              f"max |diff| {check['max_abs_diff']:.1e}")  # fmt: skip


def loss_check(setups: dict[str, Setup]) -> dict | None:
    """Cached and uncached-frozen train on the same inputs from the same weights: their
    losses should agree step by step (to float rounding; autocast on CUDA loosens it)."""
    if not {"cached", "uncached-frozen"} <= set(setups) or setups["uncached-frozen"].cfg.stage.augment:
        return None
    a, b = setups["cached"].losses, setups["uncached-frozen"].losses
    return {"steps": len(a), "max_abs_diff": max(abs(x - y) for x, y in zip(a, b))}


# -- main ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides of configs/train.yaml, e.g. data.root=...")
    parser.add_argument("--model", default="toy", help="model config group (toy, tiny, longclip_b, longclip_l, ...)")
    parser.add_argument("--data", default="toy", help="data config group (toy, csv, baid), or smoke: generated images")
    parser.add_argument("--setups", default=",".join(DEFAULT_SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per setup per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: trainer.num_workers)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, help="training images (default: enough that no setup sees one "
                        "twice; 0 = the whole training set; also the cache build's size)")  # fmt: skip
    parser.add_argument("--augment", action="store_true", help="uncached setups train on augmented views")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory (CPU: a fresh process per setup)")
    parser.add_argument("--cache-dir", type=Path, help="feature cache root, kept (default: temporary, removed)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--memory-of", choices=list(SETUPS), help=argparse.SUPPRESS)  # internal: one setup's memory
    parser.add_argument("--hydra-overrides", help=argparse.SUPPRESS)  # internal: the parent's overrides (JSON)
    args = parser.parse_intermixed_args(argv)  # Hydra overrides may come before, between or after options
    args.setups = [name.strip() for name in args.setups.split(",") if name.strip()]
    unknown = sorted(set(args.setups) - set(SETUPS))
    if unknown or not args.setups:
        parser.error(f"--setups: {', '.join(unknown) or 'none given'}; choose from {', '.join(SETUPS)}")
    return args


def main(argv: list[str] | None = None) -> dict | None:
    """Run the benchmark (``argv`` as on the command line); returns what ``--json`` writes."""
    args = parse_args(argv)
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")  # as train.py
    work = Path(tempfile.mkdtemp(prefix="benchmark_train-"))
    try:
        if args.memory_of:
            _measure_memory_here(args.memory_of, json.loads(args.hydra_overrides))
            return None
        return run_benchmark(args, work)
    finally:  # a caller in the same process (a test) gets its settings back
        shutil.rmtree(work, ignore_errors=True)
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(precision)


def setup_overrides(name: str, args: argparse.Namespace) -> list[str]:
    """The uncached setups' augmentation (the cached one always trains on the eval view)."""
    return [] if name == "cached" else [f"stage.augment={str(args.augment).lower()}"]


def run_benchmark(args: argparse.Namespace, work: Path) -> dict:
    cache_dir = args.cache_dir or work / "feature_cache"
    base = ["stage=finetune", f"model={args.model}", f"device={args.device}", "logger=none", "init_from=null",
            "resume=never", "model.backbone_weights=null", f"trainer.batch_size={args.batch_size}",
            "trainer.progress=false", f"paths.output_root={_quote(work / 'outputs')}",
            f"paths.cache_dir={_quote(cache_dir)}", "run_name=benchmark",
            "data=csv" if args.data == "smoke" else f"data={args.data}"]  # fmt: skip
    if args.workers is not None:
        base.append(f"trainer.num_workers={args.workers}")
    probe = compose_config([*base, *args.overrides])
    workers, accumulate = int(probe.trainer.num_workers), int(probe.trainer.accumulate)
    images = args.images  # 0: the whole training set
    if images is None or (images == 0 and args.data == "smoke"):
        images = images_needed(args, workers, accumulate)
    data, data_note = prepare_data(args, probe, work, images)
    print(f"[benchmark_train] data ready: {data_note}", file=sys.stderr, flush=True)
    # validation data is never read; the schedule covers every step
    overrides = [*base, *args.overrides, *data, "data.val_csv=null",
                 f"trainer.max_steps={WARMUP_STEPS + args.rounds * args.steps}"]  # fmt: skip

    setups: dict[str, Setup] = {}
    cache_build = None
    for name in args.setups:
        setups[name] = build_setup(name, [*overrides, *setup_overrides(name, args)])
        if name == "cached":
            report = setups[name].task.cache_reports["train"]
            cache_build = {"built": report.built, "reused": report.reused, "seconds": report.seconds,
                           "images_per_s": report.built / report.seconds if report.built else None,
                           "batch_size": int(setups[name].cfg.trainer.eval_batch_size),
                           "task_build_s": setups[name].task_build_s}  # fmt: skip
    if "cached" in setups and not setups["cached"].task.cached:
        raise RuntimeError("the cached setup did not train on cached features")
    for setup in setups.values():
        warm_up(setup)
    for _ in range(args.rounds):
        for setup in setups.values():
            timed_round(setup, args.steps)

    device = next(iter(setups.values())).trainer.device
    for name, setup in setups.items():
        if args.no_memory:
            setup.peak_mem_mb = None
        elif device.type == "cpu":
            setup.peak_mem_mb = cpu_peak_memory_mb(name, [*overrides, *setup_overrides(name, args)],
                                                   torch.get_num_threads())  # fmt: skip

    rows = {name: summarise(setup) for name, setup in setups.items()}
    ratios = {f"{a} / {b}": rows[a]["steps_per_s"] / rows[b]["steps_per_s"]
              for a, b in (("cached", "uncached-frozen"), ("uncached-frozen", "full")) if a in rows and b in rows}  # fmt: skip
    first = next(iter(setups.values()))
    cfg, autocast = first.cfg, first.trainer.autocast_dtype
    result = {
        "environment": environment(device),
        "run": {"model": args.model, "backbone": cfg.model.backbone, "fusion": cfg.model.fusion,
                "image_size": get_arch(cfg.model.backbone).image_size,
                "weights": f"weights {cfg.model.backbone_weights}" if cfg.model.backbone_weights else "random weights",
                "data": data_note, "training_images": len(first.task.train_dataset),
                "batch_size": int(cfg.trainer.batch_size), "accumulate": int(cfg.trainer.accumulate),
                "workers": int(cfg.trainer.num_workers), "steps": args.steps, "rounds": args.rounds,
                "warmup_steps": WARMUP_STEPS, "autocast": str(autocast).removeprefix("torch.") if autocast else "fp32",
                "uncached_augment": args.augment, "overrides": overrides},
        "setups": rows, "cache_build": cache_build, "ratios": ratios, "loss_check": loss_check(setups),
    }  # fmt: skip
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
