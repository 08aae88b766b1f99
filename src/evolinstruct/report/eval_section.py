"""An evaluation's results.json as an HTML fragment: a summary, per-skill capacity bars and difficulty bins.

Inline SVG and inline styles only (no script, no network), so the fragment works inside the run report
(`evolinstruct report RUN_DIR --eval EVAL_DIR`) and in EVAL_DIR/report.html (`eval_page_html`).
"""

from __future__ import annotations

from html import escape
from typing import Any

MODEL_COLOR = "#0072b2"
REFERENCE_COLOR = "#94a3b8"
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def _capacity_color(cap: float | None) -> str:
    if cap is None:
        return "#cbd5e1"
    return "#009e73" if cap > 90 else "#e69f00" if cap > 70 else "#d55e00"


def capacity_bars_svg(rows: list[dict[str, Any]], label_key: str = "skill", title: str = "capacity") -> str:
    """Horizontal bars: capacity % per row, with the 95% interval, and lines at 90% and 100%."""
    label_w, bar_w, row_h, top = 170, 420, 20, 24
    caps = [r["capacity_pct"] for r in rows if r.get("capacity_pct") is not None]
    highs = [r["ci_high"] for r in rows if r.get("ci_high") is not None]
    scale_max = max([110.0, *caps, *highs]) if caps else 110.0
    width, height = label_w + bar_w + 70, top + row_h * len(rows) + 24

    def x(pct: float) -> float:
        return label_w + bar_w * min(pct, scale_max) / scale_max

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {FONT}>']
    parts.append(f'<text x="{label_w}" y="14" fill="#334155">{escape(title)} (model score / reference score, %)</text>')
    for pct, dash, anchor in ((90, ' stroke-dasharray="4 3"', "end"), (100, "", "start")):
        parts.append(f'<line x1="{x(pct):.1f}" y1="{top - 4}" x2="{x(pct):.1f}" y2="{height - 18}" stroke="#64748b" '
                     f'stroke-width="1"{dash}/>'
                     f'<text x="{x(pct):.1f}" y="{height - 6}" text-anchor="{anchor}" fill="#64748b">{pct}%</text>')
    for i, row in enumerate(rows):
        y = top + i * row_h
        cap = row.get("capacity_pct")
        label = f"{row[label_key]} (n={row.get('n', 0)})"
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" fill="#0f172a">{escape(label)}</text>')
        if cap is None:
            parts.append(f'<text x="{label_w + 4}" y="{y + 14}" fill="#64748b">no judged questions</text>')
            continue
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(x(cap) - label_w, 0.5):.1f}" height="{row_h - 6}" '
                     f'fill="{_capacity_color(cap)}"><title>{escape(row[label_key])}: {cap:.1f}%</title></rect>')
        if row.get("ci_low") is not None and row.get("ci_high") is not None:
            mid = y + row_h / 2
            parts.append(f'<line x1="{x(row["ci_low"]):.1f}" y1="{mid:.1f}" x2="{x(row["ci_high"]):.1f}" y2="{mid:.1f}" '
                         'stroke="#0f172a" stroke-width="1.2"/>')
        label_x = x(max(cap, row.get("ci_high") or cap)) + 4  # right of the whisker, not on it
        parts.append(f'<text x="{label_x:.1f}" y="{y + 14}" fill="#0f172a">{cap:.0f}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def score_bars_svg(rows: list[dict[str, Any]], label_key: str, title: str) -> str:
    """Grouped vertical bars: the model's and the reference's mean score (1-10) per group."""
    group_w, bar_w, chart_h, left, top = 70, 24, 150, 34, 24
    width, height = left + group_w * max(len(rows), 1) + 10, top + chart_h + 40

    def y(score: float) -> float:
        return top + chart_h * (1 - min(max(score, 0.0), 10.0) / 10.0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {FONT}>',
             f'<text x="{left}" y="14" fill="#334155">{escape(title)} (mean score, 0-10)</text>']
    for tick in (0, 5, 10):
        parts.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{width - 10}" y2="{y(tick):.1f}" stroke="#e2e8f0"/>'
                     f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="#64748b">{tick}</text>')
    for i, row in enumerate(rows):
        gx = left + i * group_w + 8
        for j, (key, color) in enumerate((("model_score", MODEL_COLOR), ("reference_score", REFERENCE_COLOR))):
            score = row.get(key)
            if score is None:
                continue
            bx = gx + j * (bar_w + 2)
            parts.append(f'<rect x="{bx}" y="{y(score):.1f}" width="{bar_w}" height="{top + chart_h - y(score):.1f}" '
                         f'fill="{color}"><title>{escape(key.replace("_score", ""))}: {score:.2f}</title></rect>')
        cap = row.get("capacity_pct")
        parts.append(f'<text x="{gx + bar_w}" y="{top + chart_h + 14}" text-anchor="middle" fill="#0f172a">{escape(str(row[label_key]))}</text>'
                     f'<text x="{gx + bar_w}" y="{top + chart_h + 28}" text-anchor="middle" fill="#64748b">{_fmt(cap, 0, "%")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _legend() -> str:
    return ('<p style="margin:4px 0;font-size:12px">'
            f'<span style="display:inline-block;width:10px;height:10px;background:{MODEL_COLOR}"></span> model '
            f'<span style="display:inline-block;width:10px;height:10px;background:{REFERENCE_COLOR};margin-left:10px"></span> reference'
            '</p>')


def _summary(results: dict[str, Any]) -> str:
    cap = results.get("capacity_pct")
    wtl = results.get("win_tie_loss", {})
    ci = results.get("bootstrap", {}).get("capacity_ci") or [None, None]
    if cap is None:
        head = "No judged questions: the judge's verdicts could not be parsed."
    else:
        head = (f"<strong>{cap:.1f}%</strong> of the reference's score (95% CI {_fmt(ci[0])}-{_fmt(ci[1])}%); "
                f"more than 90% on <strong>{results.get('skills_over_90', 0)}</strong> of {results.get('n_skills', 0)} skills.")
    return (f'<p>{escape(str(results.get("testset")))}: model <code>{escape(str(results.get("model")))}</code> vs reference '
            f'<code>{escape(str(results.get("reference")))}</code>, judged by <code>{escape(str(results.get("judge")))}</code>. '
            f'{head} Win/tie/loss: {wtl.get("win", 0)}/{wtl.get("tie", 0)}/{wtl.get("loss", 0)}; '
            f'unparsed verdicts: {results.get("unparsed", 0)} of {results.get("verdicts", "?")}; '
            f'{results.get("n", 0)} of {results.get("n_items", results.get("n", 0))} questions judged.</p>')


def eval_section_html(results: dict[str, Any]) -> str:
    """The HTML fragment for one results.json: summary, capacity per skill, scores and difficulty bins."""
    group = "category" if results.get("testset") in ("vicuna", "mtbench") else "skill"
    parts = ['<div class="evolinstruct-eval">', _summary(results)]
    skills = results.get("skills") or []
    if skills:
        parts.append(f'<h4>Capacity per {group}</h4>')
        parts.append(capacity_bars_svg(skills, "skill", f"capacity per {group}"))
    if results.get("mode") == "single" and skills:
        parts.append(f'<h4>Mean rating per {group}</h4>{_legend()}')
        parts.append(score_bars_svg(skills, "skill", f"MT-Bench rating per {group}"))
    bins = results.get("difficulty_bins") or []
    if bins:
        parts.append(f'<h4>By difficulty</h4>{_legend()}')
        parts.append(score_bars_svg(bins, "bin", "score by difficulty bin"))
    parts.append("</div>")
    return "".join(parts)


def eval_page_html(results: dict[str, Any], title: str = "evolinstruct evaluation") -> str:
    """A minimal self-contained page around the fragment (EVAL_DIR/report.html)."""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<title>{escape(title)}</title>'
            '<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:24px auto;padding:0 16px;color:#0f172a}'
            'code{background:#f1f5f9;padding:0 3px}</style></head><body>'
            f'<h1>{escape(title)}</h1>{eval_section_html(results)}</body></html>\n')
