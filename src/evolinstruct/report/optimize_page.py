"""The report of an optimization (`evolinstruct report OPT_DIR`): one self-contained HTML page.

It draws what `evolinstruct optimize` wrote (history.jsonl, stats.json): the current method's dev success
(by the chosen detector, the paper's and our rules) and score at each step, with every candidate's score and
the accepted steps marked; a table of the candidates; the method's text diff at each accepted step; the
holdout comparison. Inline CSS and SVG only: no script, nothing from the network.
"""

from __future__ import annotations

import difflib
import json
import time
from datetime import datetime, timezone
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from ..rundir import STATS, check_output_file, make_output_dir, read_jsonl, write_text
from .data import ReportError

HISTORY = "history.jsonl"
COLORS = {"success": "#0072b2", "success_paper": "#e69f00", "success_rules": "#009e73", "score": "#cc79a7"}
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _css() -> str:
    return resources.files("evolinstruct.report").joinpath("assets", "report.css").read_text(encoding="utf-8")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def points(history: list[dict[str, Any]], stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The current method's dev metrics at the start of each step, then after the last step."""
    out = [{"step": r["step"], **r["dev"], "accepted": r["changed"]} for r in history]
    if history and stats.get("final"):
        out.append({"step": history[-1]["step"] + 1, **stats["final"], "accepted": False, "final": True})
    return out


def chart(history: list[dict[str, Any]], stats: dict[str, Any]) -> str:
    """Success rates (left axis, 0-1) and score (right axis) per step; candidates' scores as dots; a ring on
    each step whose candidate was accepted."""
    pts = points(history, stats)
    if not pts:
        return '<p class="hint">No finished step yet.</p>'
    w, h, left, right, top, bottom = 760, 280, 44, 52, 16, 34
    steps = [p["step"] for p in pts]
    cand_scores = [c["dev"]["score"] for r in history for c in r["candidates"]]
    smax = max([p["score"] for p in pts] + cand_scores + [1e-9]) * 1.1

    def x(step: float) -> float:
        span = max(steps) - min(steps) or 1
        return left + (step - min(steps)) / span * (w - left - right)

    def y(v: float, top_value: float = 1.0) -> float:
        return top + (1 - v / top_value) * (h - top - bottom)

    parts = [f'<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="dev success and score per step">']
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e2e8f0"/>'
                     f'<text x="{left - 6}" y="{y(t) + 4:.1f}" font-size="11" text-anchor="end">{100 * t:.0f}%</text>'
                     f'<text x="{w - right + 6}" y="{y(t) + 4:.1f}" font-size="11">{smax * t:.2f}</text>')
    for p in pts:
        label = "final" if p.get("final") else f"step {p['step']}"
        parts.append(f'<text x="{x(p["step"]):.1f}" y="{h - 12}" font-size="11" text-anchor="middle">{label}</text>')
    for r in history:
        for c in r["candidates"]:
            parts.append(f'<circle cx="{x(r["step"]) + 8:.1f}" cy="{y(c["dev"]["score"], smax):.1f}" r="3" '
                         f'fill="none" stroke="{COLORS["score"]}"><title>step {r["step"]} candidate {c["index"]}: '
                         f'score {c["dev"]["score"]:.3f}, success {_pct(c["dev"]["success"])}</title></circle>')
    for key, top_value in (("success", 1.0), ("success_paper", 1.0), ("success_rules", 1.0), ("score", smax)):
        line = " ".join(f"{x(p['step']):.1f},{y(p[key], top_value):.1f}" for p in pts)
        dash = ' stroke-dasharray="4 3"' if key in ("success_paper", "success_rules") else ""
        parts.append(f'<polyline points="{line}" fill="none" stroke="{COLORS[key]}" stroke-width="2"{dash}/>')
        for p in pts:
            parts.append(f'<circle cx="{x(p["step"]):.1f}" cy="{y(p[key], top_value):.1f}" r="3" fill="{COLORS[key]}">'
                         f'<title>{key} {p[key]:.3f}</title></circle>')
    for r in history:
        if r["changed"]:  # the accepted candidate becomes the next point: ring it there
            nxt = r["step"] + 1
            parts.append(f'<circle cx="{x(nxt):.1f}" cy="{y(next(p["score"] for p in pts if p["step"] == nxt), smax):.1f}" '
                         f'r="8" fill="none" stroke="#0f172a" stroke-width="2"><title>accepted at step {r["step"]}'
                         '</title></circle>')
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{c}"></i>{escape(k.replace("_", " "))}</span>' for k, c in COLORS.items())
    return ('<div class="legend">' + legend + '<span><i style="background:#0f172a"></i>accepted (ringed)</span></div>'
            + "".join(parts))


def steps_table(history: list[dict[str, Any]]) -> str:
    rows = []
    for r in history:
        cands = "<br>".join(
            f'{"<b>" if r["accepted"] == c["index"] else ""}#{c["index"]}: {_pct(c["dev"]["success"])} / '
            f'{_num(c["dev"]["score"])}{"" if c["optimized"] else " (no Optimized Method block)"}'
            f'{" accepted</b>" if r["accepted"] == c["index"] else ""}' for c in r["candidates"])
        verdict = ("accepted, method changed" if r["changed"] else
                   "accepted, same method" if r["accepted"] is not None else "kept the current method")
        d = r["dev"]
        rows.append(f"<tr><td>{r['step']}</td><td>{_pct(d['success'])}</td><td>{_pct(d['success_paper'])}</td>"
                    f"<td>{_pct(d['success_rules'])}</td><td>{_num(d['score'])}</td><td>{cands}</td>"
                    f"<td>{verdict}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("step", "success", "paper", "rules", "score",
                                              "candidates: success / score", "decision"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def method_diff(before: str, after: str) -> str:
    """A line diff of two methods: removed lines struck in red, added ones in green."""
    out = []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        tag, text = line[:2], escape(line[2:])
        if tag == "- ":
            out.append(f'<del style="background:#fee2e2;display:block">- {text}</del>')
        elif tag == "+ ":
            out.append(f'<ins style="background:#dcfce7;display:block;text-decoration:none">+ {text}</ins>')
        elif tag == "  ":
            out.append(f'<span style="display:block">  {text}</span>')
    return f'<pre style="white-space:pre-wrap">{"".join(out)}</pre>'


def diffs(history: list[dict[str, Any]]) -> str:
    blocks = []
    for r in history:
        if r["changed"]:
            c = r["candidates"][r["accepted"]]
            blocks.append(f"<h3>Step {r['step']}: candidate {c['index']} accepted</h3>"
                          f"{method_diff(r['method'], r['method_after'])}"
                          f"<details><summary>the optimizer's trajectory analysis</summary><pre style=\"white-space:pre-wrap\">"
                          f"{escape(c['analysis'])}</pre></details>")
    if not blocks:
        blocks.append('<p class="hint">No step changed the method: the initial method stands.</p>')
    final = history[-1]["method_after"] if history else ""
    blocks.append(f'<details><summary>the final method, in full</summary><pre style="white-space:pre-wrap">'
                  f"{escape(final)}</pre></details>")
    return "".join(blocks)


def holdout_table(holdout: dict[str, Any]) -> str:
    init, final = holdout.get("initial") or {}, holdout.get("final") or {}
    rows = [("evolutions", str(init.get("evolutions", "-")), str(final.get("evolutions", "-"))),
            ("kept", str(init.get("kept", "-")), str(final.get("kept", "-"))),
            ("eliminated", _pct(init.get("elimination_rate")), _pct(final.get("elimination_rate")))]
    for reason in sorted(set(init.get("elimination_by_reason", {})) | set(final.get("elimination_by_reason", {}))):
        rows.append((f"&nbsp;&nbsp;{escape(reason)}", _pct(init.get("elimination_by_reason", {}).get(reason, 0.0)),
                     _pct(final.get("elimination_by_reason", {}).get(reason, 0.0))))
    rows += [("mean instruction chars (kept)", str(init.get("mean_instruction_chars") or "-"),
              str(final.get("mean_instruction_chars") or "-")),
             ("mean difficulty (kept)", str(init.get("mean_difficulty") or "-"), str(final.get("mean_difficulty") or "-")),
             ("calls per kept evolution", str(init.get("calls_per_kept") or "-"), str(final.get("calls_per_kept") or "-"))]
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    return (f"<p class=\"lead\">{holdout['seeds']} held-out seeds x {holdout['epochs']} epoch(s), every elimination rule on "
            f"(OPT_DIR/holdout/initial and final are evolve runs with their own report"
            f"{'; the final method is the initial one, so its side is the initial run' if holdout.get('final_is_initial') else ''}).</p>"
            f"<table><thead><tr><th></th><th>initial method</th><th>final method</th></tr></thead><tbody>{body}</tbody></table>")


def page(opt_dir: Path, history: list[dict[str, Any]], stats: dict[str, Any]) -> str:
    title = f"evolinstruct optimization: {opt_dir.resolve().name}"
    init, final = stats.get("initial") or {}, stats.get("final") or {}
    summary = (f"<p>{stats.get('steps_done', len(history))} of {stats.get('steps_planned', '?')} steps; accepted at steps "
               f"{', '.join(map(str, stats.get('accepted_steps', []))) or 'none'}. Dev success ({escape(stats.get('failure', ''))}) "
               f"{_pct(init.get('success'))} &rarr; {_pct(final.get('success'))}, paper detector "
               f"{_pct(init.get('success_paper'))} &rarr; {_pct(final.get('success_paper'))}, our rules "
               f"{_pct(init.get('success_rules'))} &rarr; {_pct(final.get('success_rules'))}; score "
               f"{_num(init.get('score'))} &rarr; {_num(final.get('score'))}. {stats.get('stored_calls', '?')} calls stored.</p>")
    models = stats.get("models") or {}
    sections = [
        ("progress", "Success and score per step", "The current method's dev metrics when each step starts, and after "
         "the last; dots: the step's candidates' scores. A candidate replaces the method only when its success and "
         "score are both at least the current method's.", chart(history, stats)),
        ("steps", "Steps and candidates", "Every candidate's dev success and score, and the decision.", steps_table(history)),
        ("method", "The method, step by step", "The text diff of the method at each step that changed it.", diffs(history)),
    ]
    if stats.get("holdout"):
        sections.append(("holdout", "Holdout: initial vs final method", "", holdout_table(stats["holdout"])))
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{escape(t)}</h2><p class="lead">{lead}</p>{content}</section>'
                   for a, t, lead, content in sections)
    subtitle = " · ".join(x for x in (
        f"evol {escape(str(models.get('evol', '')))}", f"optimizer {escape(str(models.get('optimizer', '')))}",
        "generated " + datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")) if x)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{escape(title)}</title><style>{_css()}</style></head>
<body><header><div class="wrap"><h1>{escape(title)}</h1><p class="subtitle">{subtitle}</p>
<nav>{nav}</nav></div></header>
<main class="wrap"><section id="summary">{summary}</section>{body}</main>
<footer class="wrap">Made by <code>evolinstruct report</code>. Self-contained: this file loads nothing from the network.</footer>
</body></html>
"""


def build_optimize_report(opt_dir: str | Path, out: str | Path) -> dict[str, Any]:
    started = time.monotonic()
    opt_dir = Path(opt_dir)
    check_output_file(out)
    if not (opt_dir / HISTORY).is_file():
        raise ReportError(f"{opt_dir}: no {HISTORY}: no step has finished; run `evolinstruct optimize SEEDS -o "
                          f"{opt_dir}` (the same command resumes a stopped one)")
    try:
        history = list(read_jsonl(opt_dir / HISTORY))
        stats_path = opt_dir / STATS
        stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise ReportError(f"{opt_dir / STATS}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    html = page(opt_dir, history, stats)
    write_text(make_output_dir(Path(out).parent) / Path(out).name, html)
    return {"steps": len(history), "bytes": len(html.encode("utf-8")), "seconds": time.monotonic() - started}
