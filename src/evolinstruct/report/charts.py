"""Small chart primitives for the report: HTML bars and inline SVG, no JavaScript needed to draw them.

Hand-written rather than plotly: plotly's bundle is ~3.5 MB of JavaScript to inline, while these few
chart kinds take a few KB and render the same in any browser, printed or offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

# Seeds in slate, then one distinct hue per epoch (colour-blind friendly order from Okabe-Ito).
EPOCH_COLORS = ["#64748b", "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#f0e442"]
STATUS_COLORS = {"kept": "#16a34a", "eliminated": "#f59e0b", "error": "#dc2626"}


def epoch_color(epoch: int) -> str:
    return EPOCH_COLORS[epoch % len(EPOCH_COLORS)]


def epoch_label(epoch: int) -> str:
    return "seeds" if epoch == 0 else f"epoch {epoch}"


def fmt_num(value: float, digits: int = 2) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def bar_rows(rows: Sequence[tuple[str, Sequence[tuple[float, str, str]], str]], scale: float | None = None) -> str:
    """Horizontal stacked bars in HTML: rows of (label, [(value, colour, tooltip)], right-hand text)."""
    total_max = scale or max((sum(v for v, _, _ in segs) for _, segs, _ in rows), default=0) or 1
    out = ['<div class="bars">']
    for label, segments, right in rows:
        fills = "".join(
            f'<span class="fill" style="width:{100 * v / total_max:.2f}%;background:{color}" title="{escape(tip)}"></span>'
            for v, color, tip in segments
            if v > 0
        )
        out.append(
            f'<div class="bar-row"><span class="bar-label" title="{escape(label)}">{escape(label)}</span>'
            f'<span class="track">{fills}</span><span class="bar-value">{escape(right)}</span></div>'
        )
    out.append("</div>")
    return "".join(out)


def legend(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{color}"></i>{escape(label)}</span>' for label, color in items
    ) + "</div>"


def histogram(counts: Sequence[int], labels: Sequence[str], color: str, title: str, y_max: int,
              mean: float | None = None, x_min: float = 1.0) -> str:
    """One column chart (a small multiple): `counts[i]` for bin `labels[i]`, on a shared y scale."""
    w, h, left, bottom, top = 240, 150, 26, 20, 22
    n = len(counts)
    step = (w - left - 6) / max(n, 1)
    y_max = max(y_max, 1)
    parts = [f'<svg class="chart hist" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="14" class="chart-title">{escape(title)}</text>']
    plot_h = h - bottom - top
    for tick in sorted({y_max, y_max // 2} - {0}):  # counts: whole-number ticks only
        y = h - bottom - plot_h * tick / y_max
        parts.append(f'<line x1="{left}" x2="{w - 4}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 4}" y="{y + 3:.1f}" class="tick" text-anchor="end">{tick}</text>')
    for i, (c, lab) in enumerate(zip(counts, labels, strict=True)):
        x = left + i * step
        bar_h = plot_h * c / y_max
        parts.append(f'<rect x="{x + 1:.1f}" y="{h - bottom - bar_h:.1f}" width="{step - 2:.1f}" height="{bar_h:.1f}" '
                     f'fill="{color}"><title>{escape(lab)}: {c}</title></rect>')
        parts.append(f'<text x="{x + step / 2:.1f}" y="{h - 6}" class="tick" text-anchor="middle">{escape(lab)}</text>')
    if not sum(counts):
        parts.append(f'<text x="{left + (w - left) / 2:.1f}" y="{top + plot_h / 2:.1f}" class="tick" '
                     'text-anchor="middle">no ratings</text>')
    if mean is not None:
        x = left + (mean - x_min + 0.5) * step
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 2}" y2="{h - bottom}" class="mean-line"/>'
                     f'<text x="{w - 4}" y="14" class="tick strong" text-anchor="end">mean {mean:.2f}</text>')
    parts.append(f'<line x1="{left}" x2="{w - 4}" y1="{h - bottom}" y2="{h - bottom}" class="axis"/></svg>')
    return "".join(parts)


def box_plot(groups: Sequence[tuple[str, str, Sequence[float]]], unit: str, title: str) -> str:
    """Horizontal box plots, one row per group (label, colour, values): quartiles, whiskers at 5th/95th."""
    row_h, left, right, top = 30, 70, 16, 26
    w = 520
    h = top + row_h * len(groups) + 24
    all_values = [v for _, _, vs in groups for v in vs]
    hi = float(np.percentile(all_values, 99)) if all_values else 1.0
    hi = max(hi, 1.0)
    plot_w = w - left - right

    def x(v: float) -> float:
        return left + plot_w * min(v, hi) / hi

    parts = [f'<svg class="chart box" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}">',
             f'<text x="0" y="14" class="chart-title">{escape(title)}</text>']
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        gx = left + plot_w * frac
        parts.append(f'<line x1="{gx:.1f}" x2="{gx:.1f}" y1="{top - 4}" y2="{h - 20}" class="grid"/>'
                     f'<text x="{gx:.1f}" y="{h - 6}" class="tick" text-anchor="middle">{fmt_num(hi * frac, 0)}</text>')
    for i, (label, color, values) in enumerate(groups):
        cy = top + row_h * i + row_h / 2
        parts.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" class="tick" text-anchor="end">{escape(label)}</text>')
        if not len(values):
            continue
        p5, q1, med, q3, p95 = np.percentile(values, [5, 25, 50, 75, 95])
        tip = (f"{label}: n={len(values)}, median {med:.0f} {unit}, quartiles {q1:.0f}-{q3:.0f}, "
               f"5th-95th percentile {p5:.0f}-{p95:.0f}, max {max(values):.0f}")
        parts.append(f'<g><title>{escape(tip)}</title>'
                     f'<line x1="{x(p5):.1f}" x2="{x(p95):.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="{color}" stroke-width="1.5"/>'
                     f'<rect x="{x(q1):.1f}" y="{cy - 9:.1f}" width="{max(x(q3) - x(q1), 1.5):.1f}" height="18" rx="3" '
                     f'fill="{color}" fill-opacity="0.25" stroke="{color}"/>'
                     f'<line x1="{x(med):.1f}" x2="{x(med):.1f}" y1="{cy - 9:.1f}" y2="{cy + 9:.1f}" stroke="{color}" stroke-width="3"/>'
                     f'<text x="{min(x(p95) + 6, w - 2):.1f}" y="{cy + 4:.1f}" class="tick">{med:.0f}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def scatter(points: Sequence[tuple[float, float, int, str]], title: str) -> str:
    """The diversity map: (x, y, epoch, hover text) points; report.js adds the tooltip and legend toggles."""
    w, h, pad = 640, 400, 14
    xs = np.array([p[0] for p in points]) if points else np.zeros(1)
    ys = np.array([p[1] for p in points]) if points else np.zeros(1)
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    sx = (w - 2 * pad) / ((x1 - x0) or 1)
    sy = (h - 2 * pad) / ((y1 - y0) or 1)
    radius = 4.5 if len(points) < 400 else 3 if len(points) < 2000 else 2
    parts = [f'<svg class="chart scatter" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}">',
             f'<rect x="0" y="0" width="{w}" height="{h}" class="plot-bg"/>']
    # Later epochs on top, so the evolved points are not hidden under the seeds.
    for px, py, epoch, text in sorted(points, key=lambda p: p[2]):
        cx = pad + (px - x0) * sx
        cy = h - pad - (py - y0) * sy
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius}" fill="{epoch_color(epoch)}" data-epoch="{epoch}" '
                     f'data-tip="{escape(text)}"><title>{escape(text)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
