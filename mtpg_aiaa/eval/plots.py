"""Diagnostic plots of predictions against ground truth.

matplotlib is imported lazily and drawn through ``Figure`` + ``FigureCanvasAgg``,
which needs no global backend: importing this module, or calling it from a
process with an interactive backend (or no display), changes nothing global.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

from .metrics import check_scores

# Scatter markers from few points (large, nearly opaque: 10 points must be seen) to many
# (small, translucent: 92 % of BAID's 6,400 test scores lie in one narrow band), on log10(N).
FEW_POINTS, MANY_POINTS = 10, 10_000
FEW_STYLE, MANY_STYLE = (36.0, 0.9), (3.0, 0.2)  # (marker area in points^2, alpha)


def scatter_marker_style(n: int) -> tuple[float, float]:
    """Marker area (points^2) and alpha for a scatter plot of ``n`` points: geometric in area
    and linear in alpha between ``FEW_STYLE`` at 10 points and ``MANY_STYLE`` at 10,000,
    held at the ends outside that range."""
    span = math.log10(MANY_POINTS) - math.log10(FEW_POINTS)
    f = min(max((math.log10(max(n, 1)) - math.log10(FEW_POINTS)) / span, 0.0), 1.0)
    size = FEW_STYLE[0] * (MANY_STYLE[0] / FEW_STYLE[0]) ** f
    alpha = FEW_STYLE[1] + (MANY_STYLE[1] - FEW_STYLE[1]) * f
    return size, alpha


def _metrics_text(metrics: dict) -> str:
    """Short multi-line summary (SRCC/PLCC/Acc, with CIs when present) for the plot."""
    lines = []
    for label, key, percent in (("SRCC", "srcc", False), ("PLCC", "plcc", False), ("Acc", "acc", True)):
        if metrics.get(key) is None:  # null when too few images were scored
            continue
        scale, fmt = (100.0, "{:.1f}%") if percent else (1.0, "{:.3f}")
        text = f"{label} " + fmt.format(scale * metrics[key])
        if f"{key}_ci_low" in metrics:
            low, high = (fmt.format(scale * metrics[f"{key}_ci_{s}"]) for s in ("low", "high"))
            text += f" [{low}, {high}]"
        lines.append(text)
    if metrics.get("majority_acc") is not None:
        lines.append(f"floor {100.0 * metrics['majority_acc']:.1f}%")
    if "n" in metrics:
        lines.append(f"N {int(metrics['n'])}")
    return "\n".join(lines)


def save_scatter_plot(
    pred,
    target,
    path,
    threshold: float = 0.5,
    title: str = "",
    metrics: dict | None = None,
    scale_label: str = "0-1",
) -> Path:
    """Save a prediction-vs-ground-truth scatter plot as a PNG.

    Args:
        pred: predicted scores [N] (y axis).
        target: ground-truth scores [N] on the same scale (x axis).
        path: output PNG path; parent folders are created.
        threshold: the binary "good" cut, drawn as dashed lines on both axes.
        title: figure title.
        metrics: optional output of ``compute_metrics``; SRCC/PLCC/Acc are shown
            in a text box.
        scale_label: score range shown in the axis labels, e.g. "0-1" or "0-10".

    Markers shrink and fade as N grows (``scatter_marker_style``), so the plot reads from
    ten points to ten thousand.

    Returns:
        The path written. The PNG is written to a temporary file in the same
        folder and then renamed, so readers never see a half-written image.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p, t = check_scores(pred, target, min_n=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(5, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lo = float(min(p.min(), t.min(), threshold))
    hi = float(max(p.max(), t.max(), threshold))
    pad = 0.03 * (hi - lo) if hi > lo else 0.5
    lo, hi = lo - pad, hi + pad

    size, alpha = scatter_marker_style(len(p))
    ax.scatter(t, p, s=size, alpha=alpha, linewidths=0, color="tab:blue", rasterized=True)
    ax.plot([lo, hi], [lo, hi], color="0.3", linewidth=0.8, label="y = x")
    ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}")
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"ground truth ({scale_label})")
    ax.set_ylabel(f"prediction ({scale_label})")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    if metrics:
        ax.text(
            0.03, 0.97, _metrics_text(metrics), transform=ax.transAxes, va="top", ha="left",
            fontsize=7, family="monospace", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8},
        )
    fig.tight_layout()
    return _save_png(fig, path)


def save_training_curves(history: list[dict], path, title: str = "") -> Path | None:
    """Plot a run's history (rows of ``metrics.jsonl``): training loss terms and learning
    rate against the optimizer step, and validation SRCC/PLCC. Returns None when the
    history holds nothing to plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train_keys = sorted({k for row in history for k in row if k.startswith("train/") and k not in _NOT_LOSSES})
    val_keys = [k for k in ("val/srcc", "val/plcc") if any(k in row for row in history)]
    if not train_keys and not val_keys:
        return None

    def series(key):
        rows = [row for row in history if row.get(key) is not None]
        return [row["step"] for row in rows], [row[key] for row in rows]

    fig = Figure(figsize=(9, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    loss_ax, val_ax = fig.subplots(1, 2)
    for key in train_keys:
        loss_ax.plot(*series(key), linewidth=1.6 if key == "train/loss" else 0.9, label=key.removeprefix("train/"))
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("training loss")
    if train_keys:
        loss_ax.legend(fontsize=7, frameon=False)
    lr_ax = loss_ax.twinx()
    lr_ax.plot(*series("train/lr"), color="0.6", linewidth=0.8, linestyle=":")
    lr_ax.set_ylabel("learning rate (dotted)", color="0.4")
    for key in val_keys:
        val_ax.plot(*series(key), marker="o", markersize=3, label=key)
    val_ax.set_xlabel("optimizer step")
    val_ax.set_ylabel("validation")
    if val_keys:
        val_ax.legend(fontsize=7, frameon=False)
    else:
        val_ax.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=val_ax.transAxes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_png(fig, Path(path))


# Logged under train/ but not losses: drawn separately or not at all.
_NOT_LOSSES = {"train/lr", "train/images_per_s", "train/skipped_micro_batches", "train/skipped_images"}


def _save_png(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name in the same folder (same filesystem, so os.replace is atomic);
    # opened normally rather than via mkstemp so the PNG gets umask permissions, not 0600.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as fh:
            fig.savefig(fh, format="png")
        os.replace(tmp, path)
    except BaseException:
        # Do not leave half-written temporaries next to the outputs.
        tmp.unlink(missing_ok=True)
        raise
    return path
