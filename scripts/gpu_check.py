"""One GPU check: the CUDA tests and every benchmark of issue #11, each figure beside its target.

    python scripts/gpu_check.py --out outputs/gpu_check            # a CUDA GPU, ~6 minutes (--budget)
    python scripts/gpu_check.py --quick --device cpu --out outputs/gpu_check_cpu # tiny sizes: proves the script runs
    bash scripts/gpu_check.sh                                      # offline: installs .whl/ first

Parts, in this order (each in its own process with a hard time cap, so a crash, hang or
CUDA error in one leaves the others' figures):

  cuda_tests            pytest -m cuda (tests/test_cuda.py), one line per test as it ends
  forward_b256          the model forward at batch 256, bf16 autocast: fusion=official with
                        open_clip's MultiheadAttention (float mask) and with the fused attention
                        (SDPA, the text tower is_causal), fusion=token; whether each tower's
                        attention runs on the flash kernel alone; against the FLOP limit
                        (measured bf16 matmul peak / FLOPs per sample); last, the same
                        fusion=official model with torch.compile (each backbone block, as
                        ``eval.compile``) beside it, compile time on its own
  inference_b16         scripts/benchmark_inference.py: the literal release path vs ours, batch 16
  train_full            scripts/benchmark_train.py, setup full (full fine-tuning), against 35 %
                        of the FLOP limit of training (3x the forward)
  stage2_epoch          one epoch of stage-2 head training on cached features held on the device,
                        50,737 rows as BAID's train split
  test_py               test.py end to end on generated JPEGs with a random Long-CLIP-L checkpoint
                        in the released layout (fp16 on CUDA), process wall time, and where it went
  train_full_compile    train_full with trainer.compile=true; compile time (its warm-up) on its
                        own, speed beside train_full's
  forward_b256_compile  (not in the default list) forward_b256's compile phase alone
  suite_not_slow        (not in the default list) the wall time of pytest -m "not slow and not cuda"
                        with the GPU visible (the CPU machine runs it in ~66 s)

Results are written as they come: ``<out>/gpu_check.json`` before and after every part,
and ``<out>/parts/<part>.json`` (each figure as soon as it is measured) and
``<out>/parts/<part>.log`` (the part's progress lines) by the part itself, so a part stopped
at its cap, or the whole run killed, leaves what it had measured.

FLOPs per sample count the matmuls of both towers (2 x parameters x tokens, plus attention's
4 x tokens^2 x width per layer); for Long-CLIP-L that is ~162 GFLOP per 224-px image and
~27 GFLOP for a 150-token description, as issue #11 states.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

# name: (hard cap in seconds on a GPU, in --quick mode). Sized from the first H200 run
# (Long-CLIP-L forward at batch 256 ~0.18 s, ~10-15 s of interpreter and CUDA start-up per
# process); the --budget (default 400 s) stops the run first: a part starts only with 15 s
# left, under a cap cut to what is left, so the list ends with the parts that matter least.
PARTS = {
    "cuda_tests": (120, 400),
    "forward_b256": (130, 400),  # ends with its compile phase (forward_b256_compile)
    "inference_b16": (60, 200),
    "train_full": (60, 200),
    "stage2_epoch": (45, 200),
    "test_py": (100, 300),
    "train_full_compile": (150, 400),
    "forward_b256_compile": (100, 400),  # not in the default list
    "suite_not_slow": (240, 900),  # not in the default list
}
DEFAULT_PARTS = [name for name in PARTS if name not in ("forward_b256_compile", "suite_not_slow")]
DEFAULT_BUDGET_S = 400

import gpu_check_common  # noqa: E402 - scripts/ is on the path now
from gpu_check_common import figure, progress, record, sizes  # noqa: E402
from gpu_check_parts import PART_FUNCTIONS  # noqa: E402


HIDDEN_PARTS = {"selftest": (20, 20)}  # tests/test_gpu_check.py
assert set(PARTS) | set(HIDDEN_PARTS) <= set(PART_FUNCTIONS), "a part without its function in gpu_check_parts.py"


# -- driver ---------------------------------------------------------------------------------
def environment(device) -> dict:
    import torch

    import mtpg_aiaa

    env = {"torch": torch.__version__, "device": str(device), "python": sys.version.split()[0],
           "cpu_count": len(os.sched_getaffinity(0)), "mtpg_aiaa": str(Path(mtpg_aiaa.__file__).parent)}  # fmt: skip
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1))
    return env


def run_part_here(args) -> None:
    """The child process: run one part, writing its JSON as figures come and at the end."""
    import torch

    from mtpg_aiaa.device import resolve_device

    gpu_check_common._PARTIAL_PATH = Path(args.part_json)
    progress(f"{args.part}: imports done")
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # CUDA context start-up, timed on its own
        progress(f"CUDA ready on {torch.cuda.get_device_name(device)}")
    record(environment=environment(device))
    work = Path(tempfile.mkdtemp(prefix=f"gpu_check_{args.part}_", dir=args.work))
    start = time.perf_counter()
    try:
        result = PART_FUNCTIONS[args.part](args, device, sizes(args.quick), work)
        status = {"status": "ok"}
    except Exception as error:  # recorded, so the other parts' figures survive
        result = {}
        status = {"status": "error", "error": f"{type(error).__name__}: {error}"[-4000:], "traceback": traceback.format_exc()[-4000:]}
        progress(f"{args.part} failed: {type(error).__name__}: {str(error)[-500:]}")
    memory = {"peak_gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30} if device.type == "cuda" else {}
    figures = result.pop("figures", None)
    record(figures, **{**result, **status, "seconds": time.perf_counter() - start, **memory})


def run_capped(command: list[str], env: dict, cap: float, log: Path) -> tuple[int | None, str]:
    """Run ``command`` in its own process group; at ``cap`` seconds stop the whole group
    (test.py, its DataLoader workers, torchrun children), so nothing outlives its part.
    Its stderr goes to ``log`` and to our stdout (indented) line by line as it comes.
    Returns (exit code or None on timeout, the stderr)."""
    import threading

    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    _RUNNING.append(process)
    lines: list[str] = []

    def copy() -> None:
        with log.open("w") as handle:
            for line in process.stderr:
                lines.append(line)
                handle.write(line)
                handle.flush()
                print(f"    | {line.rstrip()[:300]}", flush=True)

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    try:
        process.wait(timeout=cap)
        returncode = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        returncode = None
    reader.join(timeout=5)
    _RUNNING.remove(process)
    return returncode, "".join(lines)


_RUNNING: list[subprocess.Popen] = []


def _write_report(report: dict, out: Path) -> None:
    temporary = out / "gpu_check.json.tmp"
    temporary.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(temporary, out / "gpu_check.json")


def derived_figures(parts: dict) -> dict:
    """Figures that compare two parts (torch.compile's training speed beside the eager one)."""
    eager, compiled = parts.get("train_full", {}), parts.get("train_full_compile", {})
    try:
        speed = compiled["figures"]["full_finetune_compiled_images_per_s"]["value"] / \
            eager["figures"]["full_finetune_images_per_s"]["value"]  # fmt: skip
    except (KeyError, TypeError, ZeroDivisionError):
        return {}
    figures = {"compile_speedup_train_full": figure(speed, 1.0, "x", note="kept only if > 1; two processes")}
    if "full_finetune_warmup_s" in eager and "full_finetune_compiled_warmup_s" in compiled:
        figures["compile_time_train_full_s"] = figure(
            compiled["full_finetune_compiled_warmup_s"] - eager["full_finetune_warmup_s"], None, "s",
            note="the compiled warm-up (2 steps) minus the eager one")  # fmt: skip
    return figures


def print_summary(report: dict) -> None:
    print(f"\n{'part':<22} {'status':<9} {'wall s':>7}")
    for name, part in report["parts"].items():
        print(f"{name:<22} {part['status']:<9} {part.get('wall_s', 0):7.1f}")
    print(f"\n{'figure':<44} {'value':>12} {'target':>10}  met")
    show = (lambda v: f"{v:.4g}" if isinstance(v, float) else str(v))
    for key, row in report["figures"].items():
        target = row["target"]
        print(f"{key:<44} {show(row['value']):>12} {show(target) if target is not None else '-':>10}  {row['met']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (proves the script on a CPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check")
    parser.add_argument("--budget", type=float,
                        help=f"seconds for all parts together (default {DEFAULT_BUDGET_S}; --quick: 2400)")
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--caps", default="", help="NAME=SECONDS,...: other caps for some parts")
    parser.add_argument("--part", choices=list(PART_FUNCTIONS), help=argparse.SUPPRESS)  # internal: run one part here
    parser.add_argument("--part-json", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--cap", type=float, default=600, help=argparse.SUPPRESS)  # internal: this part's cap
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 2400 if args.quick else DEFAULT_BUDGET_S
    if args.part:
        run_part_here(args)
        return 0
    known = {**PARTS, **HIDDEN_PARTS}
    names = [name.strip() for name in args.parts.split(",") if name.strip()]
    caps = dict(item.split("=") for item in args.caps.split(",") if item.strip())
    unknown = sorted(set(names) - set(known)) + sorted(set(caps) - set(known))
    if unknown or not names:
        parser.error(f"unknown parts {unknown or 'none given'}; choose from {', '.join(PARTS)}")

    (args.out / "parts").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": args.quick, "budget_s": args.budget,
              "sizes": sizes(args.quick), "parts": {}, "figures": {}}  # fmt: skip
    started = time.perf_counter()

    def stop(signum, _frame):  # killed from outside: stop the running part, keep what was measured
        for process in list(_RUNNING):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        report["stopped_by"] = signal.Signals(signum).name
        _write_report(report, args.out)
        print(f"[gpu_check] {signal.Signals(signum).name}: stopped; wrote {args.out / 'gpu_check.json'}", flush=True)
        sys.exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))}  # fmt: skip
    for name in names:
        cap = float(caps.get(name, known[name][1 if args.quick else 0]))
        part_json, log = args.out / "parts" / f"{name}.json", args.out / "parts" / f"{name}.log"
        part_json.unlink(missing_ok=True)
        start = time.perf_counter()
        left = args.budget - (time.perf_counter() - started)
        if left < 15:
            part = {"status": "skipped", "error": f"the {args.budget:.0f} s budget was spent"}
            print(f"[gpu_check] {name}: skipped (budget spent)", flush=True)
        else:
            cap = min(cap, int(left))
            print(f"[gpu_check] {name} (cap {cap:.0f} s, {left:.0f} s of the budget left) ...", flush=True)
            report["parts"][name] = {"status": "running", "cap_s": cap}
            _write_report(report, args.out)
            command = [sys.executable, __file__, "--part", name, "--part-json", str(part_json), "--work", str(work),
                       "--device", args.device, "--cap", str(cap), *(["--quick"] if args.quick else [])]  # fmt: skip
            returncode, stderr = run_capped(command, env, cap, log)
            part = json.loads(part_json.read_text()) if part_json.is_file() else {}
            if returncode is None:
                part.update(status="timeout", error=f"stopped at its cap of {cap:.0f} s; figures measured before are kept")
            elif not part or part.get("status") == "running":
                part.update(status="error", error=f"exit {returncode} before the part finished: {stderr[-3000:]}")
            part["stderr_tail"] = stderr[-2000:]
            part["cap_s"] = cap
        part["wall_s"] = time.perf_counter() - start
        report["parts"][name] = part
        report.setdefault("environment", part.get("environment"))
        for key, row in part.get("figures", {}).items():
            report["figures"][key] = row
        report["figures"].update(derived_figures(report["parts"]))
        report["total_wall_s"] = time.perf_counter() - started
        _write_report(report, args.out)
        status = part["status"] if part["status"] != "error" else "error: " + part["error"].strip().splitlines()[-1][:200]
        print(f"[gpu_check] {name}: {status} in {part['wall_s']:.1f} s ({len(part.get('figures', {}))} figures)", flush=True)
    shutil.rmtree(work, ignore_errors=True)  # generated images and checkpoints (GBs at full size)
    print_summary(report)
    print(f"\nwrote {args.out / 'gpu_check.json'} in {report['total_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
