"""Data-parallel scaling: stage-2 training throughput with 1, 2, ... processes under torchrun.

Each process count runs the real command, ``torchrun --standalone --nproc_per_node=P
train.py ...`` (weak scaling: ``--batch`` images per process, so the global batch grows
with P), full fine-tuning with augmentation, no feature cache. Throughput is images/s over
the optimizer steps after ``--warmup`` untimed ones, read from the run's own history
(``metrics.jsonl``: ``train/images_per_s`` counts every rank's images). On CPU each process
gets ``cores / P`` threads, so 1 x 2 threads is compared with 2 x 1 thread on the same cores.

    python scripts/benchmark_ddp.py                        # model=toy data=toy, CPU (gloo), P = 1 2
    python scripts/benchmark_ddp.py --device cuda --procs 1 2 4 8 --model longclip_l --batch 16

Writes the runs into a temporary directory; ``--json`` prints the figures as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--model", default="toy", help="model config group")
    parser.add_argument("--data", default="toy", help="data config group")
    parser.add_argument("--batch", type=int, default=16, help="images per process per step")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps first")
    parser.add_argument("--workers", type=int, default=1, help="data-loader workers per process")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for train.py")
    return parser.parse_args(argv)


def run(procs: int, args: argparse.Namespace, out: Path) -> dict:
    steps = args.warmup + args.steps
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "train.py",
        f"model={args.model}", f"data={args.data}", "stage=finetune", "model.freeze=full",
        "stage.feature_cache.enabled=false", f"trainer.batch_size={args.batch}", f"trainer.max_steps={steps}",
        f"trainer.log_every={args.warmup}", f"trainer.num_workers={args.workers}", "trainer.progress=false",
        "trainer.val_every=1000000", "data.val_csv=null", f"device={args.device}", f"paths.output_root={out}",
        f"run_name=ddp{procs}", "resume=never", *args.overrides,
    ]  # fmt: skip
    env = dict(os.environ)
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // procs))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"torchrun with {procs} process(es) failed:\n{result.stderr[-4000:]}")
    rows = [json.loads(line) for line in (out / "train" / f"ddp{procs}" / "metrics.jsonl").read_text().splitlines()]
    rate = _timed_rate(rows, args)
    return {"procs": procs, "images_per_s": rate, "images_per_s_per_process": rate / procs,
            "global_batch": args.batch * procs, "threads_per_process": env.get("OMP_NUM_THREADS")}  # fmt: skip


def _timed_rate(rows: list[dict], args: argparse.Namespace) -> float:
    """Images/s between the warm-up's last log and the final one (both cumulative within the epoch)."""
    logged = [(row["step"], row["train/images_per_s"]) for row in rows if "train/images_per_s" in row]
    (first_step, first_rate), (last_step, last_rate) = [s for s in logged if s[0] >= args.warmup][0], logged[-1]
    if last_step == first_step:
        return last_rate
    # rate_k = images_k / time_k with images_k proportional to k: recover the time of the timed steps.
    time_first, time_last = first_step / first_rate, last_step / last_rate
    return (last_step - first_step) / (time_last - time_first)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mtpg-ddp-") as tmp:
        results = [run(procs, args, Path(tmp)) for procs in args.procs]
    base = results[0]["images_per_s"]
    for result in results:
        result["speedup"] = result["images_per_s"] / base
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'procs':>5} {'images/s':>9} {'per proc':>9} {'speed-up':>8} {'global batch':>12}")
    for r in results:
        print(f"{r['procs']:>5} {r['images_per_s']:9.1f} {r['images_per_s_per_process']:9.1f} {r['speedup']:7.2f}x {r['global_batch']:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
