"""The parts of scripts/gpu_check.py: each runs in its own process (``gpu_check.py --part NAME``)
and records its figures as it measures them (``record``, in gpu_check_common.py), so a part
stopped at its cap keeps them. See gpu_check.py for what each part measures and its cap.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# scripts/ is on the path: gpu_check.py puts it there.
from gpu_check_common import (
    _PART_STARTED, BAID_TEST_ROWS, BAID_TRAIN_ROWS, build_on_device, figure, make_test_set,
    matmul_peak_tflops, progress, random_tokens, record, sample_gflop, stream_command, sync,
)


# -- parts (each runs in its own process) --------------------------------------------------
def part_cuda_tests(args, device, size, work: Path) -> dict:
    # -v: one line per test as it ends, recorded at once (a cap leaves the tests that ran);
    # no -x: one failing test does not hide the others; --durations: which tests took the time.
    # faulthandler_timeout: a test still running after 40 s prints every thread's stack (where it waits).
    command = [sys.executable, "-m", "pytest", "-v", "-rfE", "--durations=10", "-p", "no:cacheprovider", "-m", "cuda",
               "-o", "faulthandler_timeout=40", "tests/test_cuda.py"]  # fmt: skip
    start = time.perf_counter()
    results: dict[str, str] = {}

    def on_line(line: str) -> None:
        for outcome in ("PASSED", "FAILED", "ERROR", "SKIPPED"):
            if f" {outcome}" in line and "::" in line and not line.startswith(outcome):
                results[line.split(" ")[0].split("::", 1)[-1]] = outcome
                record(tests=results, tests_seconds=time.perf_counter() - start)
                break

    progress("pytest -m cuda tests/test_cuda.py (its output follows)")
    returncode, output = stream_command(command, timeout=args.cap - 8, on_line=on_line)  # leave time to write the JSON
    if returncode is None:
        raise RuntimeError(f"pytest -m cuda still running after {args.cap - 8} s; {len(results)} tests ended:\n{output[-3000:]}")
    summary = next((line for line in reversed(output.strip().splitlines())
                    if any(word in line for word in (" passed", " failed", " error", " skipped", "no tests ran"))), "")  # fmt: skip
    ran = device.type == "cuda" and " passed" in summary and " skipped" not in summary
    passed = returncode == 0 and ran
    return {"figures": {"cuda_tests_pass": figure(passed if device.type == "cuda" else "skipped (no GPU)",
                                                  True if device.type == "cuda" else None, "bool")},
            "returncode": returncode, "summary": summary.strip(), "tests": results,
            "seconds": time.perf_counter() - start, "output_tail": output[-3000:]}  # fmt: skip


def part_suite_not_slow(args, device, size, work: Path) -> dict:
    """The test suite's fast part with the GPU visible: tests/conftest.py keeps it on the CPU,
    so it should take about what it takes on a CPU machine."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "not slow and not cuda", "--durations=10", "-p",
               "no:cacheprovider", "-o", "faulthandler_timeout=60", "tests"]  # fmt: skip
    start = time.perf_counter()
    returncode, output = stream_command(command, timeout=args.cap - 8)
    wall = time.perf_counter() - start
    summary = next((line for line in reversed(output.strip().splitlines()) if " passed" in line or " failed" in line), "")
    if returncode is None:
        raise RuntimeError(f"pytest still running after {wall:.0f} s:\n{output[-3000:]}")
    return {"figures": {"suite_not_slow_wall_s": figure(wall, None, "s", note=summary.strip()),
                        "suite_not_slow_pass": figure(returncode == 0, True, "bool")},
            "output_tail": output[-3000:]}  # fmt: skip


def part_inference_b16(args, device, size, work: Path) -> dict:
    import benchmark_inference

    out = work / "benchmark_inference.json"
    argv = ["--backbone", size["backbone"], "--device", str(device), "--batch-size", "16",
            "--batches", str(size["b16_batches"]), "--no-memory", "--json", str(out)]  # fmt: skip
    progress(f"benchmark_inference {' '.join(argv)} (in this process)")
    report = benchmark_inference.main(argv, log=progress)
    target = 2.0 if device.type == "cuda" else 1.3
    return {"figures": {"speedup_ours_over_literal_b16": figure(report["speedup"], target, "x"),
                        "ours_images_per_s_b16": figure(report["ours"]["images_per_s"], None, "img/s"),
                        "ours_wide_images_per_s_b16": figure(report["ours_wide"]["images_per_s"], None, "img/s"),
                        "literal_images_per_s_b16": figure(report["literal"]["images_per_s"], None, "img/s")},
            "report": report}  # fmt: skip


def _forward_inputs(model, size, device):
    import torch

    arch = model.backbone.arch
    batch, length = size["b256"], size["description_tokens"] + 1
    images = torch.randn(batch, 3, arch.image_size, arch.image_size, device=device)
    return images, random_tokens(batch, length).to(device)


def _autocast(device):
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def time_forward(model, images, tokens, iters: int, device, label: str, warmups: int = 1) -> tuple[float, float]:
    """(seconds of the first call, images/s over ``iters`` calls after ``warmups`` calls) of
    the model's forward under inference mode and bf16 autocast (on CUDA)."""
    import torch

    with torch.inference_mode(), _autocast(device):
        start = time.perf_counter()
        model.score_tensors(images, tokens)  # warm-up (with torch.compile: the compile)
        sync(device)
        first = time.perf_counter() - start
        progress(f"{label}: first batch of {len(images)} in {first:.2f} s")
        for _ in range(warmups - 1):  # torch.compile: any recompile happens here, not in the timed calls
            start = time.perf_counter()
            model.score_tensors(images, tokens)
            sync(device)
            progress(f"{label}: another warm-up batch in {time.perf_counter() - start:.2f} s")
        start = time.perf_counter()
        for _ in range(iters):
            model.score_tensors(images, tokens)
        sync(device)
    speed = len(images) * iters / (time.perf_counter() - start)
    progress(f"{label}: {iters} timed batches: {speed:.0f} img/s")
    return first, speed


def flash_only(call) -> bool | str:
    """True when ``call()`` runs with SDPA restricted to the flash kernel, else why not."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            call()
        return True
    except RuntimeError as error:
        return f"no: {str(error).strip().splitlines()[0][:200]}"


def _flash_checks(model, images, tokens, device) -> dict:
    import torch

    from mtpg_aiaa.backbone.attention import attention_as

    backbone, rows = model.backbone, slice(0, 8)
    checks = {}
    for mode in ("sdpa", "module"):
        with attention_as(model, mode), torch.inference_mode(), _autocast(device):
            checks[f"text_{mode}"] = flash_only(lambda: backbone.encode_text(tokens[rows]))
            checks[f"image_{mode}"] = flash_only(lambda: backbone.encode_image(images[rows]))
    progress(f"flash kernel alone: {checks}")
    return checks


def part_forward_b256(args, device, size, work: Path) -> dict:
    import torch

    from mtpg_aiaa.backbone.attention import set_attention
    from mtpg_aiaa.models.mtpg.model import MTPGConfig

    peak = matmul_peak_tflops(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    arch = None
    results, firsts, official = {}, {}, None
    for fusion, modes in (("official", ("module", "sdpa")), ("token", ("sdpa",))):
        torch.manual_seed(0)
        model = build_on_device(MTPGConfig(backbone=size["backbone"], fusion=fusion), device).eval()
        arch = model.backbone.arch
        if arch is not None and not results:
            flops = sample_gflop(arch, size["description_tokens"])
            limit = peak * 1e3 / flops["total"]
            record(matmul_peak_tflops=peak, gflop_per_sample=flops, flop_limit_images_per_s=limit,
                   autocast="bf16" if device.type == "cuda" else "fp32")  # fmt: skip
        images, tokens = _forward_inputs(model, size, device)
        if fusion == "official":
            record(flash_kernel_alone=_flash_checks(model, images, tokens, device))
        for mode in modes:
            set_attention(model, mode)
            firsts[fusion, mode], results[fusion, mode] = time_forward(model, images, tokens, size["b256_iters"], device,
                                                                       f"fusion={fusion} attention={mode}")  # fmt: skip
            key = f"forward_b{len(images)}_{fusion}_images_per_s" + ("" if mode == "sdpa" else "_module_attention")
            record(figures={key: figure(results[fusion, mode], 0.5 * limit if mode == "sdpa" else None, "img/s",
                                        note="target: 50 % of the FLOP limit" if mode == "sdpa" else
                                        "open_clip's MultiheadAttention with the float causal mask (before this work)")})  # fmt: skip
        if fusion == "official":
            official = (model, images, tokens)  # for the compile phase, last
        del model
    figures = {
        "official_over_token_time": figure(results["token", "sdpa"] / results["official", "sdpa"], 1.2, "x", False,
                                           note="fusion=official should cost about what token costs"),
        "fused_over_module_attention_speed": figure(results["official", "sdpa"] / results["official", "module"], None, "x",
                                                    note=f"fusion=official, batch {size['b256']}: SDPA is_causal vs float mask"),
    }  # fmt: skip
    record(figures=figures)
    # Last (a cap here keeps every figure above): the same fusion=official model, compiled.
    compile_phase(*official, size, device, firsts["official", "sdpa"], results["official", "sdpa"])
    return {}


def compile_phase(model, images, tokens, size, device, eager_first: float, eager: float) -> None:
    """Every backbone block of ``model`` (eager figures given) through ``torch.compile``
    (``compile_blocks``, as ``eval.compile``): speed, compile time, max |diff| of the scores."""
    import torch

    from mtpg_aiaa.backbone.compiling import compile_blocks

    with torch.inference_mode(), _autocast(device):
        expected = model.score_tensors(images, tokens)["score"].float()
    compile_blocks(model)
    first, compiled = time_forward(model, images, tokens, size["b256_iters"], device, "compiled", warmups=2)
    with torch.inference_mode(), _autocast(device):
        max_diff = (model.score_tensors(images, tokens)["score"].float() - expected).abs().max().item()
    progress(f"compiled vs eager: max |diff| of the scores {max_diff:.1e}")
    record(figures={"forward_b256_compiled_images_per_s": figure(compiled, None, "img/s"),
                    "compile_speedup_forward_b256": figure(compiled / eager, 1.0, "x", note="kept only if > 1"),
                    "compile_time_forward_s": figure(first - eager_first, None, "s",
                                                     note="first compiled batch minus first eager batch")},
           compiled_vs_eager_max_abs_diff=max_diff)  # fmt: skip


def part_forward_b256_compile(args, device, size, work: Path) -> dict:
    """forward_b256's compile phase alone (not in the default list; forward_b256 ends with it):
    fusion=official, fused attention, eager then compiled, side by side in this process."""
    import torch

    from mtpg_aiaa.models.mtpg.model import MTPGConfig

    torch.manual_seed(0)
    model = build_on_device(MTPGConfig(backbone=size["backbone"], fusion="official"), device).eval()
    images, tokens = _forward_inputs(model, size, device)
    eager_first, eager = time_forward(model, images, tokens, size["b256_iters"], device, "eager")
    record(figures={"forward_b256_eager_images_per_s": figure(eager, None, "img/s")})
    compile_phase(model, images, tokens, size, device, eager_first, eager)
    return {}


def part_test_py(args, device, size, work: Path) -> dict:
    """``test.py`` end to end on generated JPEGs; on CUDA with the JPEGs decoded on the GPU
    (``eval.decode=device``). Where the time went is test.py's own log (``time_split_s``
    in its metrics.json: start-up, weights, table, waiting for decoding, model, metrics, writing)."""
    import torch

    from mtpg_aiaa.models.mtpg.checkpoint import save_official_checkpoint
    from mtpg_aiaa.models.mtpg.model import MTPGConfig

    start = time.perf_counter()
    csv = make_test_set(work / "data", size["test_images"], size["image_wh"])
    generated_s = time.perf_counter() - start
    progress(f"generated {size['test_images']} JPEGs in {generated_s:.1f} s")
    record(generate_data_s=generated_s)
    torch.manual_seed(0)
    model = build_on_device(MTPGConfig(backbone=size["backbone"]), device)
    start = time.perf_counter()
    ckpt = save_official_checkpoint(model.cpu(), work / "model_save.pt")  # a released file holds CPU tensors
    del model
    progress(f"saved the released-layout checkpoint in {time.perf_counter() - start:.1f} s")
    run_dir = work / "run"
    decode = "device" if device.type == "cuda" else "cpu"
    command = [sys.executable, "test.py", f"ckpt={ckpt}", f"data.csv={csv}", f"data.image_root={work / 'data' / 'images'}",
               f"device={device}", f"eval.num_workers={size['workers']}", "eval.progress=false", "eval.n_bootstrap=100",
               f"eval.decode={decode}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    start = time.perf_counter()
    progress(f"test.py eval.decode={decode} (its output follows)")
    returncode, output = stream_command(command, timeout=max(args.cap - (time.perf_counter() - _PART_STARTED) - 8, 10))
    wall = time.perf_counter() - start
    progress(f"test.py exited {returncode} after {wall:.1f} s")
    if returncode is None:
        raise RuntimeError(f"test.py still running after {wall:.0f} s:\n{output[-3000:]}")
    if returncode:
        raise RuntimeError(output[-3000:])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "figures": {"test_py_wall_s": figure(wall, 15.0 * size["test_images"] / BAID_TEST_ROWS, "s", False,
                                             note=f"{size['test_images']} JPEGs of {size['image_wh'][0]}x{size['image_wh'][1]}; goal 10 s for 6,400"),
                    "test_py_images_per_s": figure(metrics["n"] / wall, None, "img/s")},
        "process_wall_s": wall, "test_py_time_split_s": metrics.get("time_split_s"), "decode": decode,
        "workers": size["workers"], "precision": metrics.get("backbone_precision"), "generate_data_s": generated_s,
        "output_tail": output[-1500:],
    }  # fmt: skip


def _benchmark_train(device, size, work: Path, setup: str) -> dict:
    """``scripts/benchmark_train.py`` with one setup, in this process; its report."""
    import benchmark_train

    argv = ["--model", size["model_group"], "--data", "smoke", "--device", str(device), "--setups", setup,
            "--batch-size", str(size["train_batch"]), "--steps", str(size["train_steps"]), "--rounds", str(size["train_rounds"]),
            "--no-memory", "--json", str(work / f"benchmark_train_{setup}.json")]  # fmt: skip
    if not size["workers"]:
        argv += ["--workers", "0"]
    progress(f"benchmark_train {' '.join(argv)} (in this process)")
    report = benchmark_train.main(argv)
    progress("benchmark_train done")
    return report


def _training_limit(device, size, backbone: str) -> tuple[float, float]:
    import torch

    from mtpg_aiaa.backbone.longclip import get_arch

    peak = matmul_peak_tflops(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    return peak, peak * 1e3 / (3 * sample_gflop(get_arch(backbone), size["description_tokens"])["total"])


def part_train_full(args, device, size, work: Path) -> dict:
    report = _benchmark_train(device, size, work, "full")
    row = report["setups"]["full"]
    record(figures={"full_finetune_images_per_s": figure(row["images_per_s"], None, "img/s")}, report=report)
    peak, limit = _training_limit(device, size, report["run"]["backbone"])
    return {"figures": {"full_finetune_images_per_s": figure(row["images_per_s"], 0.35 * limit, "img/s",
                                                             note="target: 35 % of the FLOP limit of training")},
            "full_finetune_warmup_s": row["warmup_s"], "matmul_peak_tflops": peak, "flop_limit_images_per_s": limit,
            "report": report}  # fmt: skip


def part_train_full_compile(args, device, size, work: Path) -> dict:
    """train_full with ``trainer.compile=true``; the driver sets its speed beside train_full's."""
    report = _benchmark_train(device, size, work, "full-compiled")
    row = report["setups"]["full-compiled"]
    return {"figures": {"full_finetune_compiled_images_per_s": figure(row["images_per_s"], None, "img/s")},
            "full_finetune_compiled_warmup_s": row["warmup_s"], "report": report}  # fmt: skip


def part_stage2_epoch(args, device, size, work: Path) -> dict:
    """One stage-2 epoch on cached features through the real path: ``FinetuneTask`` with the
    feature cache built by ``FeatureCache.build`` (on a GPU served from a
    ``DeviceFeatureTable``), the trainer's loader, micro-step and optimizer step, losses
    checked every ``log_every`` steps as ``Trainer`` does. The cache is built for 64
    generated paintings and loaded into a ``DeviceFeatureTable``, whose rows are then
    repeated to BAID's 50,737 (the same layout; building 50,737 entries would take the
    part's time); timed until the epoch ends or the part's time runs short, then scaled."""
    import torch

    import benchmark_train
    from make_smoke_data import write_smoke_data
    from mtpg_aiaa.models.mtpg.feature_table import DeviceFeatureTable

    smoke = write_smoke_data(work / "smoke", num_images=64)
    csv = smoke["csv"]
    batch = 16  # the authors' batch size (configs/trainer/default.yaml)
    overrides = ["stage=finetune", f"model={size['model_group']}", f"device={device}", "logger=none", "init_from=null",
                 "resume=never", "model.backbone_weights=null", "model.fusion=official", f"trainer.batch_size={batch}",
                 "trainer.progress=false", "trainer.num_workers=0", "trainer.accumulate=1",
                 f"paths.output_root={work / 'outputs'}", f"paths.cache_dir={work / 'cache'}", "run_name=stage2",
                 "data=csv", f"data.csv={csv}", f"data.train_csv={csv}", f"data.image_root={smoke['image_root']}",
                 "data.val_csv=null", f"trainer.max_steps={size['epoch_rows'] // batch}",
                 "stage.feature_cache.on_device=true"]  # fmt: skip
    start = time.perf_counter()
    setup = benchmark_train.build_setup("cached", overrides)
    trainer, dataset = setup.trainer, setup.task.train_dataset
    on_device = getattr(dataset, "on_device", False)
    if on_device:  # BAID's row count over the cached entries
        rows = torch.arange(size["epoch_rows"]) % len(dataset)
        on = rows.to(dataset.device)
        dataset = DeviceFeatureTable(dataset.features, dataset.entry_of_row[on], dataset.targets[on], dataset.scores[rows],
                                     dataset.source_rows[rows], [dataset.image_names[i] for i in rows.tolist()])  # fmt: skip
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, collate_fn=setup.task.collate,
                                         num_workers=0)  # as Trainer._run_epoch builds it for a device table  # fmt: skip
    progress(f"model, cache ({setup.task_build_s:.1f} s) and task ready in {time.perf_counter() - start:.1f} s; "
             f"{len(dataset)} rows, {'on the device' if on_device else 'one file per sample'}")  # fmt: skip

    def steps(limit: int | None, seconds_allowed: float) -> tuple[int, float]:
        done, started = 0, time.perf_counter()
        for step, batch_rows in enumerate(loader):
            if limit is not None and step >= limit:
                break
            trainer._micro_step(batch_rows)
            trainer._optimizer_step()
            done += len(batch_rows["index"])
            if (step + 1) % trainer.cfg.log_every == 0:
                trainer._check_losses()  # what Trainer does at a log step: the one host sync
            if (step + 1) % 500 == 0:
                progress(f"stage-2 step {step + 1}: {done} rows in {time.perf_counter() - started:.1f} s")
                record(rows_so_far=done, seconds_so_far=time.perf_counter() - started)
                if time.perf_counter() - started > seconds_allowed:
                    break
        trainer._check_losses()
        sync(device)
        return done, time.perf_counter() - started

    steps(3, 60)  # warm-up: kernels, the fused optimizer's state
    seconds_allowed = max(args.cap - (time.perf_counter() - _PART_STARTED) - 12, 3)
    rows, seconds = steps(None, seconds_allowed)
    progress(f"timed {rows} rows in {seconds:.2f} s")
    return {"figures": {"stage2_epoch_s": figure(seconds * BAID_TRAIN_ROWS / rows, 5.0, "s", False,
                                                 note=f"{rows} rows timed, scaled to {BAID_TRAIN_ROWS}; cached path, "
                                                      f"head only, batch {batch}, on_device={on_device}")},
            "rows_timed": rows, "seconds_timed": seconds, "batch_size": batch, "on_device": on_device,
            "task_build_s": setup.task_build_s, "precision": str(trainer.autocast_dtype)}  # fmt: skip


def part_selftest(args, device, size, work: Path) -> dict:
    """Not a check (tests/test_gpu_check.py): one figure recorded, then a hang past the cap."""
    record(figures={"selftest_recorded": figure(1.0, None, "x")})
    progress("selftest: one figure recorded; sleeping past the cap")
    time.sleep(3600)
    return {}


PART_FUNCTIONS = {name.removeprefix("part_"): function for name, function in list(globals().items())
                  if name.startswith("part_") and callable(function)}  # fmt: skip
