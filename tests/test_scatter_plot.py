"""scatter.png reads from 10 to 10,000 points: markers sized and faded by N."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mtpg_aiaa.eval.plots import MANY_STYLE, FEW_STYLE, save_scatter_plot, scatter_marker_style


def test_marker_style_shrinks_and_fades_with_n():
    styles = [scatter_marker_style(n) for n in (1, 10, 12, 100, 600, 6400, 10_000, 10**6)]
    sizes, alphas = zip(*styles)
    assert styles[0] == styles[1] == pytest.approx(FEW_STYLE)
    assert styles[-2] == styles[-1] == pytest.approx(MANY_STYLE)
    assert all(a > b for a, b in zip(sizes[1:-1], sizes[2:-1]))  # strictly smaller as N grows
    assert all(a > b for a, b in zip(alphas[1:-1], alphas[2:-1]))
    assert sizes[2] >= 30 and alphas[2] >= 0.85  # 12 points: large, nearly opaque


def _strong_blue_pixels(path) -> int:
    """Pixels where a marker shows clearly (tab:blue at alpha >= ~0.5 over white); the plot's
    lines, legend and text box are grey, red or black."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(((rgb[..., 2] - rgb[..., 0]) > 80).sum())


def test_twelve_points_are_visible_and_ten_thousand_do_not_saturate(tmp_path):
    rng = np.random.default_rng(0)
    target = rng.uniform(0.1, 0.9, 12)
    out = save_scatter_plot(target + rng.normal(0, 0.05, 12), target, tmp_path / "few.png")
    # 12 markers of ~10 px diameter at dpi 120: each covers dozens of clearly blue pixels
    # (the former fixed s=4, alpha=0.25 left none above this contrast)
    assert _strong_blue_pixels(out) >= 12 * 30
    target = np.clip(rng.normal(0.5, 0.05, 10_000), 0, 1)  # one dense band, as BAID's scores
    out = save_scatter_plot(target + rng.normal(0, 0.03, 10_000), target, tmp_path / "many.png")
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    blue = (rgb[..., 2] - rgb[..., 0]) > 20
    # translucent markers: the band shows density, the densest pixels are not all one flat colour
    assert blue.sum() > 0 and len(np.unique(rgb[blue], axis=0)) > 20
