"""Matplotlib figures to SVG files, and the same SVG made safe to inline in one HTML page.

Text is kept as SVG text (not glyph paths) so files stay small; ids are prefixed per
figure because several inline SVGs share one HTML id namespace.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from circuitdiff.results import atomic_write

STYLE = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_ID_ATTR = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)([^)"]+)')
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_PATH_DATA = re.compile(r'(\s(?:d|points)=")([^"]*)"')
_PATH_FLOAT = re.compile(r"(\d+\.\d)\d+")
_ATTR = re.compile(r'(\s(?:transform|style|x|y|x1|x2|y1|y2|width|height|viewBox)=")([^"]*)"')
_NO_ROTATION = re.compile(r'\stransform="rotate\(-?0 [0-9.\s-]+\)"')
_LONG_FLOAT = re.compile(r"(\d+\.\d\d)\d+")
_SPACES = re.compile(r"\s+")
_INDENT = re.compile(r">\s*\n\s*<")
RASTER_DPI = 200


@dataclass(frozen=True)
class RenderedFigure:
    """One figure as written to disk and as inlined in the report."""

    key: str
    file: str
    """Path relative to the report folder, e.g. ``figures/ioi_influence_heads.svg``."""
    svg: str
    """Inline-ready markup (no XML prolog, prefixed ids, scalable)."""
    caption: str


def new_figure(width: float, height: float) -> Figure:
    """A figure on an explicit Agg canvas: no pyplot, no global figure registry."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_svg(fig: Figure, salt: str) -> str:
    """SVG text of ``fig``; ``salt`` makes the generated ids deterministic and distinct per figure.

    Artists marked rasterized (dense heatmaps) are embedded as PNG at RASTER_DPI, which
    keeps a 12 x 12 heatmap to a few kilobytes instead of one SVG path per cell.
    """
    buf = io.StringIO()
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", dpi=RASTER_DPI, metadata={"Date": None, "Creator": None})
    return minify_svg(buf.getvalue())


def minify_svg(svg: str) -> str:
    """Drop metadata and indentation, round coordinates to 0.01 pt (text content is untouched)."""
    svg = _METADATA.sub("", svg)
    svg = _PATH_DATA.sub(lambda m: m.group(1) + _PATH_FLOAT.sub(r"\1", _SPACES.sub(" ", m.group(2))) + '"', svg)
    svg = _ATTR.sub(lambda m: m.group(1) + _LONG_FLOAT.sub(r"\1", _SPACES.sub(" ", m.group(2))) + '"', svg)
    svg = _NO_ROTATION.sub("", svg)
    return _INDENT.sub(">\n<", svg)


def inline_svg(svg: str, prefix: str, label: str) -> str:
    """Strip the prolog, prefix every id (and references to it), let CSS size the figure."""
    start = svg.find("<svg")
    body = svg[start:] if start >= 0 else svg
    ids = set(_ID_ATTR.findall(body))
    if ids:
        body = _ID_ATTR.sub(lambda m: f'id="{prefix}-{m.group(1)}"', body)
        body = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}" if m.group(2) in ids else m.group(0), body)
    head_end = body.find(">")
    head = body[:head_end]
    width = re.search(r'\swidth="([0-9.]+)pt"', head)
    head = re.sub(r'\s(width|height|xmlns(?::\w+)?|version)="[^"]*"', "", head)  # HTML needs no namespaces
    style = f' style="max-width:{float(width.group(1)) * 4 / 3:.0f}px"' if width else ""
    label = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return f'{head} role="img" aria-label="{label}" class="fig-svg"{style}{body[head_end:]}'


def render_figure(build: Callable[[], Figure | None], folder: Path, key: str, caption: str) -> RenderedFigure | None:
    """Build a figure under the report's style, write ``folder/figures/<key>.svg``, return its inline form.

    The style is applied with ``rc_context`` around building and saving only, so nothing
    global is changed. ``build`` returns None when there is nothing to draw.
    """
    with matplotlib.rc_context(STYLE):
        fig = build()
        if fig is None:
            return None
        svg = figure_svg(fig, key)
    path = folder / "figures" / f"{key}.svg"
    atomic_write(path, lambda p: p.write_text(svg, encoding="utf-8"))
    return RenderedFigure(key, f"figures/{key}.svg", inline_svg(svg, f"f-{key}", caption), caption)
