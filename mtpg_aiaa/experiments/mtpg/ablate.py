"""Paired ablations and validation sweeps of the CPU quickstart on toy-art (docs/method.md).

    python -m mtpg_aiaa.experiments.mtpg.ablate            # 3 variants x held-out split seeds 101 102 103
    python -m mtpg_aiaa.experiments.mtpg.ablate --sweep    # the constants' validation sweep (split seed 0)
    python -m mtpg_aiaa.experiments.mtpg.ablate --report-only  # tables from finished runs, nothing trained

For each split seed the script runs the quickstart's stage 1 (``experiment=quickstart_pretrain``,
shared by every variant), each variant's stage 2 on its frozen, cached features, and
``test.py`` on the split's test images; finished runs and tests are reused. Every command
it runs is printed first, so a row of the tables can be rerun by hand.

Ablation (held-out splits): per variant, the test SRCC on each split seed, their mean and
spread; per pair of variants, a paired bootstrap of the SRCC difference on the same test
images. One resample draws the split seeds with replacement and, within each, the test
images with replacement (the same images for both variants); the statistic is the mean
over the drawn seeds of SRCC(a) - SRCC(b). Reported: the observed mean difference, the 95 %
percentile interval and p = the share of resamples with a difference <= 0 (one-sided, for
"a beats b"). Resampling the seeds as well as the images makes the interval include
run-to-run spread, not only the choice of test images.

Sweep (``--sweep``, the development split 0 only): validation SRCC of the best epoch for
each value of a constant; the test split is not read.

Writes ``<out>/<name>.md`` (the tables as docs/method.md shows them) and ``<out>/<name>.json``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mtpg_aiaa.eval.bootstrap import paired_bootstrap

REPO = Path(__file__).resolve().parents[3]  # the repository: its train.py and test.py are run
HELD_OUT_SPLITS = (101, 102, 103)  # never used to choose anything (docs/toy_dataset.md)
DEVELOPMENT_SPLIT = 0


@dataclass(frozen=True)
class Variant:
    """One stage-2 configuration: ``train`` overrides for train.py, ``test`` for test.py."""

    name: str
    label: str
    train: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    pretrain: tuple[str, ...] = ()  # a variant with its own stage 1 (the margins)
    tags: tuple[str, ...] = field(default=())


VARIANTS = {v.name: v for v in (
    Variant("quickstart", "the quickstart: image + description statistics"),
    Variant("no_description_statistics", "without description statistics",
            ("model.fusion_description_statistics=false",)),
    Variant("image_only", "image only: descriptions blanked in training and test",
            ("data.description_column=none",), ("data.description_column=none",)),
)}
# The constants of item 4 (issue 12): each value against the quickstart's, on validation.
SWEEP = {v.name: v for v in (
    *(Variant(f"fidelity_temperature={t}", f"fidelity temperature {t}", (f"stage.fidelity_temperature={t}",))
      for t in (0.02, 0.1, 0.2)),
    *(Variant(f"level_sigma={s}", f"level_sigma {s}", (f"stage.level_sigma={s}",)) for s in (0.05, 0.2)),
    *(Variant(f"margins={m}", f"stage-1 ordering and preference margins {m}",
              pretrain=(f"stage.ordering_margin={m}", f"stage.preference_margin={m}")) for m in (0.02, 0.1)),
    # The stage-2 loss choice (docs/method.md, "Losses"): each against fidelity + ce.
    *(Variant(f"losses={name}", f"stage.losses: {name}",
              tuple(f"stage.losses.{loss}={float(loss in name.split('+'))}" for loss in ("fidelity", "emd", "ce", "mse")))
      for name in ("fidelity", "ce", "fidelity+emd", "mse")),
)}
DEFAULT_PAIRS = (("quickstart", "no_description_statistics"), ("quickstart", "image_only"),
                 ("no_description_statistics", "image_only"))


def _tag(variant: Variant) -> str:
    return variant.name.replace("=", "-").replace(".", "p").replace("+", "_")


def run_dirs(variant: Variant, split_seed: int, output_root: Path) -> dict[str, Path]:
    """Where a variant's stage-1 run, stage-2 run and test of one split live."""
    pre = "quickstart-pretrain" if not variant.pretrain else f"ablate-pretrain-{_tag(variant)}"
    fine = "quickstart-finetune" if variant.name == "quickstart" else f"ablate-{_tag(variant)}"
    return {"pretrain": output_root / "train" / f"{pre}-split{split_seed}",
            "finetune": output_root / "train" / f"{fine}-split{split_seed}",
            "test": output_root / "ablate" / f"split{split_seed}" / _tag(variant)}


def commands(variant: Variant, split_seed: int, output_root: Path, python: str, test: bool) -> list[list[str]]:
    """The train.py / test.py command lines of one variant on one split."""
    dirs = run_dirs(variant, split_seed, output_root)
    common = [f"data.build.split_seed={split_seed}", f"paths.output_root={output_root}"]
    out = [[python, "train.py", "experiment=quickstart_pretrain", *common, *variant.pretrain,
            f"run_name={dirs['pretrain'].name}"],
           [python, "train.py", "experiment=quickstart", *common, *variant.train,
            f"run_name={dirs['finetune'].name}", f"init_from={dirs['pretrain']}"]]
    if test:
        out.append([python, "test.py", f"ckpt={dirs['finetune'] / 'best.safetensors'}", "data=toy",
                    f"data.build.split_seed={split_seed}", *variant.test, f"hydra.run.dir={dirs['test']}"])
    return out


def run(command: list[str], dry_run: bool) -> None:
    """Run one command (printed first), then print its wall and CPU (user + sys) seconds."""
    print("+ " + shlex.join(command), flush=True)
    if not dry_run:
        wall, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        # One thread per process, as scripts/quickstart.sh runs (threads change summation order).
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1",
               "WANDB_MODE": "disabled"}
        subprocess.run(command, cwd=REPO, check=True, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        print(f"= {command[1]}: wall {time.perf_counter() - wall:.1f} s, CPU {cpu:.1f} s", flush=True)


def best_validation(run_dir: Path) -> dict[str, float]:
    """The epoch with the best ``val/srcc`` (the checkpoint monitor) in a run's metrics.csv."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    rows = metrics.dropna(subset=["val/srcc"])
    best = rows.loc[rows["val/srcc"].idxmax()]
    return {"val_srcc": float(best["val/srcc"]), "val_plcc": float(best["val/plcc"]), "step": int(best["step"])}


def _aligned(tables: dict[str, pd.DataFrame], a: str, b: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    merged = tables[a][["image", "score", "pred"]].merge(tables[b][["image", "pred"]], on="image",
                                                         suffixes=("_a", "_b"), validate="one_to_one")
    if len(merged) != len(tables[a]) or len(merged) != len(tables[b]):
        raise ValueError(f"{a} and {b} were tested on different images; rerun their tests")
    return merged["pred_a"].to_numpy(), merged["pred_b"].to_numpy(), merged["score"].to_numpy()


def ablation_report(variants: list[Variant], split_seeds: list[int], output_root: Path,
                    pairs: list[tuple[str, str]], n_bootstrap: int) -> tuple[dict, str]:  # fmt: skip
    predictions: dict[int, dict[str, pd.DataFrame]] = {}
    result: dict = {"split_seeds": split_seeds, "variants": {}, "pairs": [], "n_bootstrap": n_bootstrap}
    for variant in variants:
        rows = {}
        for split_seed in split_seeds:
            dirs = run_dirs(variant, split_seed, output_root)
            metrics = json.loads((dirs["test"] / "metrics.json").read_text())
            predictions.setdefault(split_seed, {})[variant.name] = pd.read_csv(dirs["test"] / "predictions.csv")
            rows[split_seed] = {"test_srcc": metrics["srcc"], "test_plcc": metrics["plcc"],
                                **best_validation(dirs["finetune"])}
        test = np.array([r["test_srcc"] for r in rows.values()])
        val = np.array([r["val_srcc"] for r in rows.values()])
        result["variants"][variant.name] = {
            "label": variant.label, "per_split": rows, "test_srcc_mean": float(test.mean()),
            "test_srcc_sd": float(test.std(ddof=1)) if len(test) > 1 else None,
            "val_srcc_mean": float(val.mean())}
    for a, b in pairs:
        pred_a, pred_b, targets = zip(*(_aligned(predictions[s], a, b) for s in split_seeds))
        result["pairs"].append({"a": a, "b": b, **paired_bootstrap(pred_a, pred_b, targets, n=n_bootstrap,
                                                                   resample="seeds_and_images")})  # fmt: skip

    seeds = ", ".join(map(str, split_seeds))
    n_images = len(next(iter(predictions[split_seeds[0]].values())))
    lines = [f"Test SRCC on held-out split seeds {seeds} ({n_images} test images each); validation SRCC of "
             "the epoch kept.", "",
             f"| variant | {' | '.join(f'split {s} val / test' for s in split_seeds)} | test mean (sd) |",
             "|---|" + "---|" * (len(split_seeds) + 1)]
    for name, v in result["variants"].items():
        cells = [f"{v['per_split'][s]['val_srcc']:.3f} / {v['per_split'][s]['test_srcc']:.3f}" for s in split_seeds]
        sd = f" ({v['test_srcc_sd']:.3f})" if v["test_srcc_sd"] is not None else ""
        lines.append(f"| `{name}`: {v['label']} | {' | '.join(cells)} | **{v['test_srcc_mean']:.3f}**{sd} |")
    if not result["pairs"]:
        return result, "\n".join(lines) + "\n"
    lines += ["", "Paired bootstrap of the test SRCC difference (seeds and images resampled, "
              f"{n_bootstrap} resamples):", "",
              "| a - b | per split | mean difference | 95 % interval | p (difference <= 0) |", "|---|---|---|---|---|"]
    for pair in result["pairs"]:
        per = " / ".join(f"{d:+.3f}" for d in pair["per_seed"])
        lines.append(f"| `{pair['a']}` - `{pair['b']}` | {per} | {pair['diff']:+.3f} | "
                     f"[{pair['low']:+.3f}, {pair['high']:+.3f}] | {pair['p_le_0']:.3f} |")
    return result, "\n".join(lines) + "\n"


def sweep_report(variants: list[Variant], split_seeds: list[int], output_root: Path) -> tuple[dict, str]:
    result: dict = {"split_seeds": split_seeds, "variants": {}}
    for variant in variants:
        rows = {s: best_validation(run_dirs(variant, s, output_root)["finetune"]) for s in split_seeds}
        result["variants"][variant.name] = {"label": variant.label, "per_split": rows,
                                            "val_srcc_mean": float(np.mean([r["val_srcc"] for r in rows.values()]))}
    seeds = ", ".join(map(str, split_seeds))
    lines = [f"Validation SRCC of the epoch kept, development split seed(s) {seeds}; the test split is not read.", "",
             f"| setting | {' | '.join(f'split {s} val SRCC / PLCC' for s in split_seeds)} |",
             "|---|" + "---|" * len(split_seeds)]
    for v in result["variants"].values():
        cells = [f"{v['per_split'][s]['val_srcc']:.3f} / {v['per_split'][s]['val_plcc']:.3f}" for s in split_seeds]
        lines.append(f"| {v['label']} | {' | '.join(cells)} |")
    return result, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="the constants' validation sweep instead of the ablation")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=None,
                        help=f"default: {' '.join(map(str, HELD_OUT_SPLITS))} (ablation), {DEVELOPMENT_SPLIT} (sweep)")
    parser.add_argument("--variants", nargs="+", default=None, help="default: all of the mode's variants")
    parser.add_argument("--output-root", type=Path, default=Path("outputs"))
    parser.add_argument("--out", type=Path, default=Path("outputs/ablate"), help="where the .md and .json go")
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    parser.add_argument("--report-only", action="store_true", help="only read finished runs")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()

    catalogue = {**VARIANTS, **SWEEP} if args.sweep else VARIANTS
    default_names = ["quickstart", *SWEEP] if args.sweep else list(VARIANTS)
    names = args.variants or default_names
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(catalogue)}")
    variants = [catalogue[n] for n in names]
    split_seeds = args.split_seeds or ([DEVELOPMENT_SPLIT] if args.sweep else list(HELD_OUT_SPLITS))
    if not args.sweep and DEVELOPMENT_SPLIT in split_seeds:
        print(f"note: split seed {DEVELOPMENT_SPLIT} is the development split; its test figures are not held out")

    if not args.report_only:
        # Variant by variant, so the quickstart's own rows are complete first.
        for variant, split_seed in itertools.product(variants, split_seeds):
            dirs = run_dirs(variant, split_seed, args.output_root)
            # Finished work is skipped (train.py would load it and validate it again).
            done = {"pretrain": (dirs["pretrain"] / "best.safetensors").is_file(),
                    "test": (dirs["test"] / "predictions.csv").is_file()}
            done["finetune"] = done["test"] if not args.sweep else (dirs["finetune"] / "best.safetensors").is_file()
            steps = ("pretrain", "finetune", "test")
            for step, command in zip(steps, commands(variant, split_seed, args.output_root, sys.executable,
                                                     test=not args.sweep)):  # fmt: skip
                if not done[step]:
                    run(command, args.dry_run)
        if args.dry_run:
            return

    if args.sweep:
        result, table = sweep_report(variants, split_seeds, args.output_root)
        name = "sweep"
    else:
        pairs = [p for p in DEFAULT_PAIRS if p[0] in names and p[1] in names]
        result, table = ablation_report(variants, split_seeds, args.output_root, pairs, args.n_bootstrap)
        name = "ablation"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(table)
    print(table)
    print(f"wrote {args.out / name}.md and .json")


if __name__ == "__main__":
    main()
