"""`evolinstruct report`: one self-contained HTML page about a run.

Everything is inlined (CSS, JS, data, SVG charts), so the file opens offline and can be mailed around.
Charts are drawn here in Python as HTML bars and SVG; the only JavaScript (assets/report.js) runs the
evolution-tree browser, the map's tooltip and a few toggles.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import check_output_file, make_output_dir, write_text
from . import charts
from .charts import STATUS_COLORS, epoch_color, epoch_label, fmt_num
from .data import RunData, load_run, redact

log = logging.getLogger(__name__)

TEXT_LIMIT = 4000  # characters of one instruction/response kept in the page; longer ones are cut with a note
SNIPPET = 160
# Scorers whose value is 0/1: shown as a share of records rather than a mean.
FLAG_SCORERS = {"has_code", "has_data"}
SCORER_ORDER = ["difficulty", "complexity", "quality", "length_tokens", "n_constraints", "n_steps",
                "has_code", "has_data", "lexical_diversity"]


def _asset(name: str) -> str:
    return resources.files("evolinstruct.report").joinpath("assets", name).read_text(encoding="utf-8")


def csp(script: str) -> str:
    """The page's Content-Security-Policy: nothing from the network, and only the one inline script, by its
    sha256 (the tree data is a JSON block, which is never run). Styles stay 'unsafe-inline': the charts draw
    with style attributes (bar widths, colours), which a hash cannot allow without 'unsafe-hashes' and one
    hash per value; styles cannot run code."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:"


def _cut(text: str | None, limit: int = TEXT_LIMIT) -> str:
    text = text or ""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit:,} more characters not shown]"


def _snippet(text: str | None, limit: int = SNIPPET) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _hint(text: str) -> str:
    return f'<p class="hint">{text}</p>'


def _section(anchor: str, title: str, lead: str, body: str) -> str:
    return (f'<section id="{anchor}"><h2>{escape(title)}</h2><p class="lead">{lead}</p>{body}</section>')


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """A table of already-escaped cells; numeric-looking columns are right-aligned by CSS class."""
    thead = "".join(f"<th>{h}</th>" for h in head)
    tbody = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{thead}</tr></thead><tbody>{tbody}</tbody></table>'


def _words(text: str | None) -> int:
    return len((text or "").split())


class Report:
    """Turns RunData into the page's sections."""

    def __init__(self, data: RunData, embed: Callable[[list[str]], np.ndarray] | None, map_limit: int,
                 tree_limit: int) -> None:
        self.data = data
        self.embed = embed
        self.map_limit = map_limit
        self.tree_limit = tree_limit
        self.records = data.records
        self.evolved = [r for r in self.records if r["epoch"] > 0]
        self.kept = [r for r in self.records if r["status"] == "kept"]  # the training mix: seeds + kept evolutions
        self.epochs = sorted({r["epoch"] for r in self.records})
        self.run_dir_hint = escape(str(data.run_dir))

    # ------------------------------------------------------------------ helpers
    def score_values(self, scorer: str, records: list[dict[str, Any]]) -> tuple[list[float], int]:
        """Values of one scorer over records, and how many failed to parse (stored as NULL)."""
        values, failures = [], 0
        for r in records:
            by_scorer = self.data.scores.get(r["id"])
            if by_scorer is None or scorer not in by_scorer:
                continue
            if by_scorer[scorer] is None:
                failures += 1
            else:
                values.append(by_scorer[scorer])
        return values, failures

    def kept_in(self, epoch: int) -> list[dict[str, Any]]:
        return [r for r in self.kept if r["epoch"] == epoch]

    def mean_difficulty(self) -> dict[int, float]:
        out = {}
        for epoch in self.epochs:
            values, _ = self.score_values("difficulty", self.kept_in(epoch))
            if values:
                out[epoch] = float(np.mean(values))
        return out

    # ------------------------------------------------------------------ sections
    def summary(self) -> str:
        stats = self.data.stats
        attempted = len(self.evolved)
        n_elim = sum(r["status"] == "eliminated" for r in self.evolved)
        n_err = sum(r["status"] == "error" for r in self.evolved)
        n_kept = attempted - n_elim - n_err
        n_seeds = sum(r["epoch"] == 0 for r in self.records)
        n_answered = sum(r["epoch"] == 0 and r["status"] == "kept" for r in self.records)
        calls = sum(c["calls"] for c in self.data.calls.values())
        tokens = sum(c["prompt_tokens"] + c["completion_tokens"] for c in self.data.calls.values())
        cost = (stats.get("cost") or {}).get("total")
        cards = [
            ("seeds", fmt_num(n_seeds), f"{fmt_num(n_answered)} answered"),
            ("kept evolutions", fmt_num(n_kept), f"of {fmt_num(attempted)} attempted"
             + (f", {n_err} errors" if n_err else "")),
            ("elimination rate", f"{100 * n_elim / attempted:.0f}%" if attempted else "–", f"{fmt_num(n_elim)} eliminated"),
            ("LLM calls", fmt_num(calls), f"{len(self.data.calls)} purposes"),
            ("tokens", fmt_num(tokens), "prompt + completion"),
            ("cost", f"${cost:,.4f}" if isinstance(cost, int | float) else "–",
             "from the price table" if cost is not None else "pass --prices to evolve"),
        ]
        means = self.mean_difficulty()
        if means:
            first, last = min(means), max(means)
            value = f"{means[first]:.2f} → {means[last]:.2f}" if first != last else f"{means[first]:.2f}"
            cards.append(("mean difficulty", value, f"{epoch_label(first)} → {epoch_label(last)} (1-10)"))
        else:
            cards.append(("mean difficulty", "–", "run <code>evolinstruct score</code>"))
        html = '<div class="cards">' + "".join(
            f'<div class="card{" wide" if label == "mean difficulty" else ""}"><div class="card-label">{escape(label)}</div>'
            f'<div class="card-value">{value}</div><div class="card-note">{note}</div></div>'
            for label, value, note in cards
        ) + "</div>"
        return html

    def difficulty(self) -> str:
        lead = ("Difficulty of each kept instruction from 1 to 10, rated by an LLM with the paper's prompt; "
                "the training mix should get harder epoch after epoch.")
        if not self.data.scores:
            return _section("difficulty", "Difficulty and scores", lead, _hint(
                f"No scores yet: run <code>evolinstruct score {self.run_dir_hint}</code> to see difficulty, "
                "complexity, quality and the cheap heuristics here."))
        body = []
        # The paper's table, for the user's data: mean difficulty per epoch next to the seeds'.
        seed_mean = None
        rows, hists = [], []
        y_max = 0
        per_epoch = {}
        for epoch in self.epochs:
            values, failures = self.score_values("difficulty", self.kept_in(epoch))
            counts = [0] * 10
            for v in values:
                counts[int(min(max(round(v), 1), 10)) - 1] += 1
            per_epoch[epoch] = (values, failures, counts)
            y_max = max(y_max, *counts)
        for epoch, (values, failures, counts) in per_epoch.items():
            mean = float(np.mean(values)) if values else None
            if epoch == 0:
                seed_mean = mean
            delta = "" if mean is None or seed_mean is None or epoch == 0 else f"{mean - seed_mean:+.2f}"
            rows.append([
                f'<span class="swatch" style="background:{epoch_color(epoch)}"></span>{epoch_label(epoch)}',
                fmt_num(len(self.kept_in(epoch))), fmt_num(len(values)),
                f"<b>{mean:.2f}</b>" if mean is not None else "–", delta, fmt_num(failures),
            ])
            hists.append(charts.histogram(counts, [str(i) for i in range(1, 11)], epoch_color(epoch),
                                          f"{epoch_label(epoch)} (n={len(values)})", y_max, mean))
        if any(values for values, _, _ in per_epoch.values()):
            body.append('<div class="split"><div>')
            body.append(_table(["", "kept", "rated", "mean difficulty", "vs seeds", "parse failures"], rows, "num"))
            body.append('<p class="note">The paper (ChatGPT as the rater) reports 3.00 for Alpaca seeds, 5.48 after '
                        'epoch 1 and 7.08 after epoch 4. A small model rates less reliably: read the trend, '
                        'not the level.</p></div>')
            body.append('<div class="multiples">' + "".join(hists) + "</div></div>")
        else:
            body.append(_hint(f"No difficulty ratings: run <code>evolinstruct score {self.run_dir_hint} --difficulty</code>."))
        body.append(self.other_scores())
        return _section("difficulty", "Difficulty and scores", lead, "".join(body))

    def other_scores(self) -> str:
        scorers = [s for s in SCORER_ORDER if s in self.data.scorers] + [
            s for s in self.data.scorers if s not in SCORER_ORDER]
        scorers = [s for s in scorers if s != "difficulty"]
        if not scorers:
            return ""
        rows = []
        for epoch in self.epochs:
            row = [f'<span class="swatch" style="background:{epoch_color(epoch)}"></span>{epoch_label(epoch)}']
            for scorer in scorers:
                values, failures = self.score_values(scorer, self.kept_in(epoch))
                if not values:
                    cell = "–"
                elif scorer in FLAG_SCORERS:
                    cell = f"{100 * float(np.mean(values)):.0f}%"
                else:
                    cell = f"{float(np.mean(values)):.2f}"
                if failures:
                    cell += f' <span class="muted" title="parse failures">({failures}✗)</span>'
                row.append(cell)
            rows.append(row)
        head = [""] + [escape(s.replace("_", " ")) for s in scorers]
        return ("<h3>Other scores, mean by epoch</h3>" + _table(head, rows, "num")
                + '<p class="note">Complexity and quality are DEITA-style ranks (higher is more complex / better); '
                  'has code / has data are the share of instructions with them; (n✗) counts unparsed ratings.</p>')

    def operations(self) -> str:
        by_op: dict[str, Counter] = defaultdict(Counter)
        by_op_epoch: dict[tuple[str, int], Counter] = defaultdict(Counter)
        for r in self.evolved:
            by_op[r["op"]][r["status"]] += 1
            by_op_epoch[(r["op"], r["epoch"])][r["status"]] += 1
        if not by_op:
            return _section("operations", "Operations", "", _hint("No evolutions were attempted in this run."))
        rows = []
        ops = sorted(by_op, key=lambda op: -by_op[op]["kept"] / max(sum(by_op[op].values()), 1))
        for op in ops:
            c = by_op[op]
            total = sum(c.values())
            segments = [(c[s], STATUS_COLORS[s], f"{op}: {c[s]} {s}") for s in ("kept", "eliminated", "error")]
            rows.append((op, segments, f"{c['kept']}/{total} kept ({100 * c['kept'] / total:.0f}%)"))
        bars = charts.bar_rows(rows)
        epochs = [e for e in self.epochs if e > 0]
        grid_rows = []
        for op in ops:
            row = [escape(op)]
            for epoch in epochs:
                c = by_op_epoch.get((op, epoch))
                if not c:
                    row.append('<span class="muted">–</span>')
                    continue
                total = sum(c.values())
                rate = c["kept"] / total
                row.append(f'<span class="rate" style="--rate:{rate:.2f}" title="{c["kept"]} kept of {total}">'
                           f'{c["kept"]}/{total}</span>')
            grid_rows.append(row)
        totals = ["<b>all</b>"]
        for epoch in epochs:
            rs = [r for r in self.evolved if r["epoch"] == epoch]
            k = sum(r["status"] == "kept" for r in rs)
            totals.append(f"<b>{k}/{len(rs)}</b>")
        grid_rows.append(totals)
        table = _table(["operation"] + [epoch_label(e) for e in epochs], grid_rows, "num grid")
        body = (charts.legend([(s, STATUS_COLORS[s]) for s in ("kept", "eliminated", "error")]) + bars
                + "<h3>Kept / attempted, by epoch</h3>" + table)
        return _section("operations", "Operations",
                        "How often each evolution operation produced an instruction that survived elimination.", body)

    def eliminations(self) -> str:
        reasons: Counter = Counter()
        examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self.evolved:
            if r["status"] == "kept":
                continue
            reason = r.get("reason") or ("call error" if r["status"] == "error" else "unspecified")
            reasons[reason] += 1
            if len(examples[reason]) < 2:
                examples[reason].append(r)
        body = []
        if reasons:
            rows = [(reason, [(n, STATUS_COLORS["eliminated"], f"{reason}: {n}")], fmt_num(n))
                    for reason, n in reasons.most_common()]
            body.append("<h3>Elimination (the paper's four rules)</h3>" + charts.bar_rows(rows))
            body.append(self._examples({k: [self._example_row(r) for r in v] for k, v in examples.items()}))
        else:
            body.append(_hint("Nothing was eliminated."))
        if self.data.filters:
            for f in self.data.filters:
                counts = ""
                if f.count_in is not None and f.count_out is not None:
                    counts = f" — {fmt_num(f.count_in)} rows in, {fmt_num(f.count_out)} out"
                body.append(f"<h3>Filter <code>{escape(f.name)}</code>{counts}</h3>")
                ran = [st for st in f.stages if st.get("removed")]
                if ran:
                    body.append(_table(["stage", "rows in", "removed"], [
                        [escape(str(st["stage"])), fmt_num(st.get("in", 0)), fmt_num(st["removed"])] for st in ran], "num"))
                if f.reasons:
                    rows = [(reason, [(n, "#7c3aed", f"{reason}: {n}")], fmt_num(n)) for reason, n in f.reasons.items()]
                    body.append(charts.bar_rows(rows))
                    body.append(self._examples({k: [self._example_row(r) for r in v] for k, v in f.examples.items()}))
                else:
                    body.append(_hint("This filter removed nothing."))
        else:
            body.append("<h3>Filters</h3>" + _hint(
                f"No filter output: run <code>evolinstruct filter {self.run_dir_hint}</code> to dedup, decontaminate "
                "and select; its removals show here by reason."))
        return _section("eliminations", "Eliminations and filters",
                        "Why evolutions were dropped, and what the filters removed. Click a reason to see examples.",
                        "".join(body))

    @staticmethod
    def _example_row(row: dict[str, Any]) -> tuple[str, str]:
        evidence = redact(row.get("evidence") or {})
        ev = "; ".join(f"{k}: {_snippet(str(v), 120)}" for k, v in evidence.items()) if isinstance(evidence, dict) else str(evidence)
        return _snippet(row.get("instruction"), 220), ev

    @staticmethod
    def _examples(examples: dict[str, list[tuple[str, str]]]) -> str:
        out = []
        for reason, rows in examples.items():
            items = "".join(f"<li><q>{escape(text)}</q>" + (f'<div class="evidence">{escape(ev)}</div>' if ev else "")
                            + "</li>" for text, ev in rows)
            out.append(f'<details class="examples"><summary>examples: {escape(reason)}</summary><ul>{items}</ul></details>')
        return "".join(out)

    def lengths(self) -> str:
        groups_instr, groups_resp = [], []
        for epoch in self.epochs:
            rs = self.kept_in(epoch)
            label = epoch_label(epoch)
            groups_instr.append((label, epoch_color(epoch), [_words(r["instruction"]) + _words(r.get("input")) for r in rs]))
            groups_resp.append((label, epoch_color(epoch), [_words(r.get("output")) for r in rs]))
        body = ('<div class="split even">' + charts.box_plot(groups_instr, "words", "Instruction + input (words)")
                + charts.box_plot(groups_resp, "words", "Response (words)") + "</div>")
        return _section("lengths", "Lengths",
                        "Words per kept instruction and response. Boxes span the middle half, the thick mark is "
                        "the median, whiskers reach the 5th and 95th percentiles; hover for numbers.", body)

    def diversity(self) -> str:
        lead = ("Every kept instruction embedded with all-MiniLM-L6-v2 and projected to 2-D (PCA). Points close "
                "together say similar things; evolutions should spread out from their seeds. Hover a point to "
                "read it, click a legend entry to hide an epoch.")
        if self.embed is None:
            return _section("diversity", "Diversity", lead, _hint("The map was turned off (--no-map)."))
        records = self.kept
        if len(records) < 3:
            return _section("diversity", "Diversity", lead, _hint("Too few kept instructions for a map."))
        sampled = ""
        if len(records) > self.map_limit:
            pick = np.sort(np.random.default_rng(0).choice(len(records), self.map_limit, replace=False))
            records = [records[i] for i in pick]
            sampled = f" A random {fmt_num(self.map_limit)} of {fmt_num(len(self.kept))} are shown."
        texts = [r["instruction"] + ("\n" + r["input"] if r.get("input") else "") for r in records]
        try:
            vectors = self.embed(texts)
        except Exception as exc:  # the optional extra may be missing: the rest of the report is still useful
            return _section("diversity", "Diversity", lead, _hint(escape(str(exc))))
        centered = vectors - vectors.mean(axis=0)
        _, singular, components = np.linalg.svd(centered, full_matrices=False)
        coords = centered @ components[:2].T
        explained = (singular[:2] ** 2).sum() / max((singular**2).sum(), 1e-12)
        points = [(float(x), float(y), r["epoch"], f"{epoch_label(r['epoch'])} · {r['op']}\n{_snippet(r['instruction'], 220)}")
                  for (x, y), r in zip(coords, records, strict=True)]
        # Mean pairwise cosine similarity inside each epoch: lower is more diverse. Unit vectors make it
        # (|sum v|^2 - n) / (n (n - 1)), no n x n matrix needed.
        rows = []
        for epoch in self.epochs:
            idx = [i for i, r in enumerate(records) if r["epoch"] == epoch]
            if len(idx) < 2:
                sim = "–"
            else:
                total = vectors[idx].sum(axis=0)
                n = len(idx)
                sim = f"{(float(total @ total) - n) / (n * (n - 1)):.3f}"
            rows.append([f'<span class="swatch" style="background:{epoch_color(epoch)}"></span>{epoch_label(epoch)}',
                         fmt_num(len(idx)), sim])
        legend = '<div class="legend toggles">' + "".join(
            f'<button type="button" data-epoch="{e}"><i style="background:{epoch_color(e)}"></i>{epoch_label(e)}</button>'
            for e in self.epochs) + "</div>"
        body = (f'<div class="split map"><div class="map-wrap">{legend}{charts.scatter(points, "diversity map")}</div>'
                f'<div>{_table(["", "points", "mean cosine similarity"], rows, "num")}'
                f'<p class="note">Mean cosine similarity of the instructions inside an epoch: lower means more '
                f'diverse. The two axes hold {100 * explained:.0f}% of the variance.{sampled}</p></div></div>')
        return _section("diversity", "Diversity", lead, body)

    def costs(self) -> str:
        calls = self.data.calls
        if not calls:
            return _section("cost", "Calls, tokens and cost", "", _hint("No LLM calls are stored in this run."))
        by_purpose = self.data.stats.get("calls_by_purpose") or {}
        hits = by_purpose.get("cache_hits") or {}
        failed = by_purpose.get("failed") or {}
        rows = []
        for purpose, c in sorted(calls.items(), key=lambda kv: -kv[1]["calls"]):
            rows.append([escape(purpose), fmt_num(c["calls"]), fmt_num(c["prompt_tokens"]), fmt_num(c["completion_tokens"]),
                         fmt_num(c["prompt_tokens"] + c["completion_tokens"]), fmt_num(hits.get(purpose, 0)),
                         fmt_num(failed.get(purpose, 0))])
        total = [sum(c[k] for c in calls.values()) for k in ("calls", "prompt_tokens", "completion_tokens")]
        rows.append(["<b>all</b>"] + [f"<b>{fmt_num(v)}</b>" for v in (*total, total[1] + total[2])]
                    + [f"<b>{fmt_num(sum(hits.values()))}</b>", f"<b>{fmt_num(sum(failed.values()))}</b>"])
        bars = charts.bar_rows([
            (purpose, [(c["prompt_tokens"], "#94a3b8", f"{purpose}: {c['prompt_tokens']:,} prompt tokens"),
                       (c["completion_tokens"], "#0072b2", f"{purpose}: {c['completion_tokens']:,} completion tokens")],
             f"{fmt_num(c['prompt_tokens'] + c['completion_tokens'])} tokens")
            for purpose, c in sorted(calls.items(), key=lambda kv: -(kv[1]["prompt_tokens"] + kv[1]["completion_tokens"]))
        ])
        cost = self.data.stats.get("cost")
        cost_note = (f"Cost: ${cost.get('total', 0):,.4f} in total (${cost.get('this_run', 0):,.4f} in the last run)."
                     if isinstance(cost, dict) else "No cost: pass <code>--prices prices.json</code> to evolve to price calls.")
        body = (_table(["purpose", "stored calls", "prompt tokens", "completion tokens", "tokens",
                        "cache hits (last run)", "failed (last run)"], rows, "num")
                + charts.legend([("prompt tokens", "#94a3b8"), ("completion tokens", "#0072b2")]) + bars
                + f'<p class="note">{cost_note} Stored calls count every call in the run store, over all resumed runs.</p>'
                + self.estimate_table())
        return _section("cost", "Calls, tokens and cost", "What the run asked of the LLMs, by purpose.", body)

    def estimate_table(self) -> str:
        """The estimate made before the last run (evolve/estimate.py) next to what that run did."""
        vs = self.data.stats.get("estimate_vs_actual")
        if not isinstance(vs, dict):
            return ""

        def cells(name: str, entry: dict[str, Any]) -> list[str]:
            lo, hi = entry["estimated"]
            mark = "yes" if entry["within"] else "<b>no</b>"
            return [escape(name), f"{fmt_num(lo)} - {fmt_num(hi)}", fmt_num(entry["actual"]), mark]

        rows = [cells(f"{purpose} calls", e) for purpose, e in sorted((vs.get("by_purpose") or {}).items())]
        rows += [cells(name.replace("_", " "), vs[name]) for name in ("calls", "prompt_tokens", "completion_tokens")
                 if isinstance(vs.get(name), dict)]
        estimate = self.data.stats.get("estimate") or {}
        source = estimate.get("elimination_source", "")
        note = (f"Estimated before the last run, with nothing sent (<code>evolve --estimate</code> prints the same). "
                f"Elimination rate used: {escape(source)}." if source else "")
        return ("<h3>Estimate and actual (last run)</h3>"
                + _table(["", "estimated", "actual", "within"], rows, "num") + f'<p class="note">{note}</p>')

    def evaluations(self) -> str:
        lead = "Models trained on this data, compared on evaluation sets."
        if not self.data.evals:
            return _section("evaluation", "Evaluation", lead,
                            _hint("No evaluation given: pass <code>--eval EVAL_DIR</code> to add its results.json here."))
        try:
            from .eval_section import eval_section_html
        except ImportError:
            return _section("evaluation", "Evaluation", lead,
                            _hint("This install cannot render evaluation results (no report.eval_section)."))
        parts = []
        for path, results in self.data.evals:
            parts.append(f"<h3>{escape(str(path))}</h3>")
            try:
                parts.append(eval_section_html(results))
            except Exception as exc:  # one bad results file should not take the whole report down
                log.warning("could not render %s: %s", path, exc)
                parts.append(_hint(f"Could not render {escape(str(path))}: {escape(str(exc))}"))
        return _section("evaluation", "Evaluation", lead, "".join(parts))

    def tree_data(self) -> dict[str, Any]:
        by_root: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self.records:
            by_root[r["root_id"]].append(r)
        roots = [r for r in self.records if r["epoch"] == 0][: self.tree_limit]
        nodes: dict[str, dict[str, Any]] = {}
        seeds = []
        for seed in roots:
            lineage = by_root[seed["id"]]
            status = Counter(r["status"] for r in lineage if r["epoch"] > 0)
            seeds.append({"id": seed["id"], "t": _snippet(seed["instruction"], 120), "k": status["kept"],
                          "x": status["eliminated"] + status["error"]})
            for r in lineage:
                node = {"p": r.get("parent_id"), "e": r["epoch"], "o": r["op"], "s": r["status"],
                        "i": _cut(r["instruction"]), "in": _cut(r.get("input")), "out": _cut(r.get("output"))}
                if r.get("history"):  # a conversation's earlier turns, shown turn by turn
                    node["h"] = [[m.get("role", ""), _cut(m.get("content"))] for m in r["history"]]
                if r.get("reason"):
                    node["r"] = r["reason"]
                if r.get("evidence"):
                    node["ev"] = redact(r["evidence"])
                if r["id"] in self.data.scores:
                    node["sc"] = self.data.scores[r["id"]]
                nodes[r["id"]] = node
        return {"seeds": seeds, "nodes": nodes, "total": sum(r["epoch"] == 0 for r in self.records)}

    def trees(self) -> str:
        data = self.tree_data()
        shown = len(data["seeds"])
        note = "" if shown == data["total"] else (
            f'<p class="note">The first {fmt_num(shown)} of {fmt_num(data["total"])} seeds are browsable '
            f"(raise --tree-limit for more).</p>")
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
        body = (f'{note}<div class="browser"><div class="seed-pane">'
                '<input id="seed-search" type="search" placeholder="Search seeds and their evolutions…" '
                'aria-label="search seeds">'
                '<div id="seed-count" class="muted"></div><ul id="seed-list"></ul></div>'
                '<div class="tree-pane"><div id="tree" aria-live="polite"></div></div></div>'
                f'<script type="application/json" id="tree-data">{payload}</script>')
        return _section("trees", "Evolution trees",
                        "Pick a seed to see its lineage: each epoch's operation, and every kept or eliminated "
                        "child with its reason. Click a node to read its instruction, response and evidence.", body)

    # ------------------------------------------------------------------ page
    def task(self) -> str:
        """A task's own numbers (stats.json `task`, from its tally: tasks/): each table as the tally gives it,
        so a new task needs no report code."""
        task = self.data.stats.get("task") or {}
        blocks = []
        for key, value in task.items():
            if key == "name" or not value:
                continue
            label = escape(key.replace("_", " "))
            if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
                columns = sorted({c for v in value.values() for c in v})
                rows = [[escape(str(k)), *[fmt_num(v.get(c)) if isinstance(v.get(c), int | float) else escape(str(v.get(c, "")))
                                           for c in columns]] for k, v in value.items()]
                blocks.append(f"<h3>{label}</h3>" + _table(["", *map(escape, columns)], rows, "num"))
            elif isinstance(value, dict):
                rows = [[escape(str(k)), fmt_num(v) if isinstance(v, int | float) else escape(str(v))] for k, v in value.items()]
                blocks.append(f"<h3>{label}</h3>" + _table(["", "count"], rows, "num"))
            else:
                blocks.append(f'<p class="note">{label}: {escape(str(value))}</p>')
        name = escape(str(task.get("name", "")))
        return _section("task", f"Task: {name}", "What this task checks beyond the paper's rules, and how often.",
                        "".join(blocks) or _hint("The task recorded no numbers."))

    def op_weights(self) -> str:
        """--op-weights adaptive: the weights before and after the pilot, and each operation's survival."""
        w = self.data.stats.get("op_weights") or {}
        configured, adaptive = w.get("configured") or {}, w.get("adaptive") or {}
        before, after = w.get("survival_pilot") or {}, w.get("survival_after") or {}

        def rate(c: dict[str, Any]) -> str:
            return "" if not c or c.get("survival") is None else f"{c['survival']:.0%} of {fmt_num(c['attempted'])}"

        rows = [[escape(op), f"{configured.get(op, 0):.1%}", f"{adaptive[op]:.1%}" if op in adaptive else "",
                 rate(before.get(op, {})), rate(after.get(op, {}))] for op in configured]
        pilot = f"{fmt_num(w.get('pilot_seeds', 0))} seeds" + ("" if w.get("pilot_complete") else ", not complete")
        lead = (f"A pilot ({pilot}) drew operations with the configured weights; every later seed drew with weights "
                f"from the pilot's survival per operation, each at least {w.get('floor', 0):.0%}.")
        return _section("op-weights", "Operation weights", lead,
                        _table(["operation", "configured", "after the pilot", "survival in the pilot",
                                "survival after"], rows, "num"))

    def page(self) -> str:
        stats = self.data.stats
        models = stats.get("models") or {}
        model_text = ", ".join(f"{role} {escape(str(name))}" for role, name in models.items() if name)
        subtitle = " · ".join(x for x in (
            f"{len(self.epochs) - 1 if self.epochs and self.epochs[0] == 0 else len(self.epochs)} epochs",
            f"templates {escape(str(stats['templates']))}" if stats.get("templates") else "",
            model_text,
            "generated " + datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        ) if x)
        sections = [
            ("difficulty", "Difficulty", self.difficulty),
            ("operations", "Operations", self.operations),
            ("eliminations", "Eliminations", self.eliminations),
            *([("task", "Task", self.task)] if isinstance(stats.get("task"), dict) else []),
            *([("op-weights", "Weights", self.op_weights)] if isinstance(stats.get("op_weights"), dict) else []),
            ("lengths", "Lengths", self.lengths),
            ("diversity", "Diversity", self.diversity),
            ("trees", "Trees", self.trees),
            ("cost", "Cost", self.costs),
            ("evaluation", "Evaluation", self.evaluations),
        ]
        nav = "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label, _ in sections)
        script = _asset("report.js")
        body = "".join(render() for _, _, render in sections)
        title = f"evolinstruct report: {self.data.run_dir.resolve().name}"
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp(script)}">
<title>{escape(title)}</title><style>{_asset("report.css")}</style></head>
<body><header><div class="wrap"><h1>{escape(title)}</h1><p class="subtitle">{subtitle}</p>
<nav>{nav}</nav></div></header>
<main class="wrap"><section id="summary">{self.summary()}</section>{body}</main>
<footer class="wrap">Made by <code>evolinstruct report</code>. Self-contained: this file loads nothing from the network.</footer>
<script>{script}</script></body></html>
"""


def build_report(run_dir: str | Path, out: str | Path, eval_dirs: list[Path] | None = None, *,
                 diversity_map: bool = True, map_limit: int = 2000, tree_limit: int = 1000) -> dict[str, Any]:
    """Write the report for RUN_DIR to `out`; returns what was done (records, bytes, seconds)."""
    started = time.monotonic()
    check_output_file(out)  # a directory or a device as -o fails before the work, not after it
    data = load_run(run_dir, eval_dirs)
    embed = None
    if diversity_map:
        from ..quality.embeddings import embed_texts

        embed = embed_texts
    html = Report(data, embed, map_limit=map_limit, tree_limit=tree_limit).page()
    write_text(make_output_dir(Path(out).parent) / Path(out).name, html)
    return {"records": len(data.records), "bytes": len(html.encode("utf-8")), "seconds": time.monotonic() - started}
