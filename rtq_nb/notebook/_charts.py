"""Small inline SVG charts of values over time (pure: strings in, an SVG string out).

No JavaScript and no plotting library: the SVG is part of the widget's HTML, so it shows in
any front end (JupyterLab, Notebook, VS Code, a saved notebook) and is redrawn on each refresh.
Colors use JupyterLab's CSS variables with fallbacks, so the charts follow a dark theme.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

__all__ = ["PALETTE", "chart"]

#: Line colors (colorblind-friendly, readable on light and dark backgrounds).
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948")
W, H = 280, 96  # the chart's size in px
LEFT, RIGHT, TOP, BOTTOM = 6, 6, 14, 16  # plot margins (labels sit inside them)
AXIS = "var(--jp-ui-font-color2, #777)"
GRID = "var(--jp-border-color2, #ddd)"

Line = tuple[str, Sequence[float | None]]  # (name, values; None: no value at that time)


def _fmt_default(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.2g}"


def chart(
    title: str,
    times: Sequence[float],
    lines: Sequence[Line],
    *,
    fmt: Callable[[float], str] = _fmt_default,
    stacked: bool = False,
    colors: Sequence[str] = PALETTE,
) -> str:
    """An SVG line chart (``stacked``: filled areas, each line on top of the previous ones)
    of ``lines`` over ``times`` (seconds, the last one 0 = now); the legend shows each line's
    last value formatted with ``fmt``. Names and the title are escaped."""
    e = html.escape
    n = len(times)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    tops: list[list[float | None]] = []
    base = [0.0] * n
    for _, values in lines:
        vals = list(values)[:n] + [None] * max(0, n - len(values))
        if stacked:
            top: list[float | None] = [b + (v or 0.0) for b, v in zip(base, vals)]
            base = [t or 0.0 for t in top]
        else:
            top = vals
        tops.append(top)
    peak = max((v for t in tops for v in t if v is not None), default=0.0)
    ymax = peak * 1.05 if peak > 0 else 1.0
    t0 = min(times, default=0.0)
    span = (0.0 - t0) or 1.0

    def xy(t: float, v: float) -> str:
        x = LEFT + plot_w * (t - t0) / span
        y = TOP + plot_h * (1 - v / ymax)
        return f"{x:.1f},{y:.1f}"

    shapes: list[str] = []
    below: list[float] = [0.0] * n
    for i, top in enumerate(tops):
        color = colors[i % len(colors)]
        pts = [xy(t, v) for t, v in zip(times, top) if v is not None]
        if stacked and pts:
            floor = [xy(t, b) for t, b in zip(times, below)][::-1]
            shapes.append(
                f"<polygon points='{' '.join(pts + floor)}' fill='{color}' "
                f"fill-opacity='0.55' stroke='{color}' stroke-width='1'/>"
            )
            below = [v if v is not None else b for v, b in zip(top, below)]
        elif len(pts) == 1:
            x, y = pts[0].split(",")
            shapes.append(f"<circle cx='{x}' cy='{y}' r='2.5' fill='{color}'/>")
        elif pts:
            shapes.append(
                f"<polyline points='{' '.join(pts)}' fill='none' stroke='{color}' "
                "stroke-width='1.8' stroke-linejoin='round'/>"
            )
    legend = []
    for i, (name, values) in enumerate(lines):
        last = next((v for v in reversed(list(values)) if v is not None), None)
        shown = "—" if last is None else fmt(last)
        legend.append(
            f"<span class='rtq-key'><i style='background:{colors[i % len(colors)]}'></i>"
            f"{e(name)} <b>{e(shown)}</b></span>"
        )
    axis_y = TOP + plot_h
    svg = (
        f"<svg class='rtq-chart-svg' viewBox='0 0 {W} {H}' width='{W}' height='{H}' "
        f"role='img' aria-label='{e(title)}'>"
        f"<line x1='{LEFT}' y1='{TOP}' x2='{W - RIGHT}' y2='{TOP}' stroke='{GRID}' "
        "stroke-dasharray='2,3'/>"
        f"<line x1='{LEFT}' y1='{axis_y}' x2='{W - RIGHT}' y2='{axis_y}' stroke='{AXIS}'/>"
        + "".join(shapes)
        + f"<text x='{LEFT}' y='{TOP - 4}' font-size='9' fill='{AXIS}'>max {e(fmt(peak))}"
        "</text>"
        f"<text x='{LEFT}' y='{H - 3}' font-size='9' fill='{AXIS}'>"
        f"{e(f'-{-t0:.0f} s' if n > 1 else '')}</text>"
        f"<text x='{W - RIGHT}' y='{H - 3}' font-size='9' fill='{AXIS}' "
        "text-anchor='end'>now</text></svg>"
    )
    return (
        f"<div class='rtq-chart'><div class='rtq-chart-title'>{e(title)}</div>{svg}"
        f"<div class='rtq-legend'>{''.join(legend)}</div></div>"
    )
