"""One self-contained HTML page showing every system's score of each painting side by side.

``write_report(entries, path)`` takes the plain per-painting dicts of ``mtpg_aiaa.explain``:
images are embedded as ``data:`` URIs (a JPEG thumbnail), the style sheet is inline, and the
page has no script and no link to anything outside itself, so it opens offline and can be
mailed as one file.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from ..data.images import DEFAULT_MAX_PIXELS, load_rgb_image
from ..fileio import atomic_write

# The browser loads nothing the page does not hold, whatever a field of an entry contains.
CONTENT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
THUMBNAIL_SIDE = 512  # px, the longer side of an embedded image
CALIBRATION_NOTE = (
    "Each system scores on its own range, shown beside its score. The 0-10 figure maps that range "
    "linearly onto 0-10; it is not a calibration, so the 0-10 figures of different systems are not "
    "comparable with each other (a 6 from one system is not a 6 from another)."
)
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #1a1a1a; max-width: 75em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-bottom: .4em; }
.note { background: #fff6d8; border-left: 4px solid #d9a400; padding: .5em .8em; }
.painting { border-top: 1px solid #bbb; padding-top: .8em; margin-top: 1.2em; break-inside: avoid; }
.row { display: flex; gap: 1.2em; align-items: flex-start; } .row > div { flex: 1; }
.row img { max-width: 320px; max-height: 320px; border: 1px solid #ccc; }
.systems { display: flex; gap: 1em; flex-wrap: wrap; flex: 1; }
.system { border: 1px solid #ccc; border-radius: 4px; padding: .5em .8em; min-width: 16em; flex: 1; }
.system h3 { margin: 0 0 .3em 0; font-size: 1em; }
.score { font-size: 1.05em; } .score b { font-size: 1.3em; }
.unavailable { color: #7a1f1f; margin: .5em 0 0 0; }
table.details { border-collapse: collapse; margin: .3em 0; } table.details td { padding: 1px 6px 1px 0; }
.bar { background: #4a78b5; height: .7em; display: inline-block; }
dl.texts dt { font-weight: bold; margin-top: .3em; } dl.texts dd { margin: 0 0 0 1em; }
.muted { color: #666; font-size: .9em; }
"""


def write_report(entries: Sequence[Mapping[str, Any]], path: str | Path, title: str = "Aesthetic scores, explained",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Path:  # fmt: skip
    """Write the page for ``entries`` (``mtpg_aiaa.explain``'s dicts) to ``path``, atomically."""
    page = render_report(entries, title, max_pixels)
    return atomic_write(Path(path), lambda temporary: Path(temporary).write_text(page, encoding="utf-8"))


def render_report(entries: Sequence[Mapping[str, Any]], title: str = "Aesthetic scores, explained",
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> str:  # fmt: skip
    """The page as one string (see ``write_report``)."""
    weights = _weights_used(entries)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_POLICY}">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">{escape(CALIBRATION_NOTE)}</p>',
    ]
    if weights:
        items = "".join(f"<li><b>{escape(system)}</b>: {escape(path)}</li>" for system, path in weights.items())
        parts.append(f'<p class="muted">Weights used:</p><ul class="muted">{items}</ul>')
    for entry in entries:
        parts.append(_painting(entry, max_pixels))
    parts.append("</body></html>")
    return "\n".join(parts)


def image_data_uri(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """``data:image/jpeg;base64,...`` of a thumbnail of ``path`` (longer side ``THUMBNAIL_SIDE``)."""
    image = load_rgb_image(path, max_pixels=max_pixels)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _weights_used(entries: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    used: dict[str, str] = {}
    for entry in entries:
        for result in entry.get("systems", ()):
            if result.get("weights"):
                used.setdefault(str(result["system"]), str(result["weights"]))
    return used


def _painting(entry: Mapping[str, Any], max_pixels: int) -> str:
    """The picture, a box per system that scored it, then one line per system that did not."""
    name = Path(str(entry["image"])).name
    results = list(entry.get("systems", ()))
    boxes = "".join(_system(result) for result in results if "unavailable" not in result)
    lines = "".join(f'<p class="unavailable"><b class="system-name">{escape(str(result["system"]))}</b>: '
                    f'{escape(str(result["unavailable"]))}</p>'
                    for result in results if "unavailable" in result)  # fmt: skip
    return (f'<section class="painting"><h2>{escape(name)}</h2><div class="row">'
            f'<img src="{image_data_uri(entry["image"], max_pixels)}" alt="{escape(name)}">'
            f'<div><div class="systems">{boxes}</div>{lines}</div></div></section>')  # fmt: skip


def _system(result: Mapping[str, Any]) -> str:
    heading = f'<h3 class="system-name">{escape(str(result["system"]))}</h3>'
    low, high = result["range"]
    direction = "higher is better" if result.get("higher_is_better", True) else "lower is better"
    parts = [
        heading,
        f'<p class="score">score <b>{result["pred"]:.4f}</b> on its range {low:g}-{high:g} ({direction})</p>',
        f'<p class="muted">{result["pred_0_10"]:.2f} on a linear 0-10 (not calibrated)</p>',
    ]
    for group, values in (result.get("details") or {}).items():
        rows = "".join(
            f"<tr><td>{escape(str(label))}</td><td>{value:.3f}</td>"
            f'<td><span class="bar" style="width:{max(0.0, min(1.0, value)) * 8:.2f}em"></span></td></tr>'
            for label, value in values.items()
        )
        parts.append(f'<p class="muted">{escape(str(group))}</p><table class="details">{rows}</table>')
    texts = result.get("texts") or {}
    if texts:
        items = "".join(f"<dt>{escape(str(name))}</dt><dd>{escape(str(text)) or '<i>(empty)</i>'}</dd>"
                        for name, text in texts.items())  # fmt: skip
        parts.append(f'<p class="muted">texts it read</p><dl class="texts">{items}</dl>')
    for note in result.get("notes") or ():
        parts.append(f'<p class="muted">{escape(str(note))}</p>')
    return f'<div class="system">{"".join(parts)}</div>'
