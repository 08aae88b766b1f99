"""Everything the CLI draws: progress bars and result tables (rich). Library code returns data; this
module alone turns it into terminal output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .console import console


# ------------------------------------------------------------------------------------------ evolve
def evolve_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TextColumn("[yellow]{task.fields[wait]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("[green]kept {task.fields[kept]}[/] [yellow]elim {task.fields[elim]}[/] [red]err {task.fields[err]}[/]"),
        console=console, transient=False,
    )


def plain(text: str) -> str:
    """`text` to print as it is, not as rich markup: a URL or a server's message may hold [brackets]
    (a key masked as "[redacted]" would otherwise vanish)."""
    return escape(text)


def waiting(wait: tuple[float, str] | None, over: float = 2.0) -> str:
    """The progress line's note on a retry wait of more than `over` seconds, e.g. "waiting 60s (429)"; shorter
    waits are routine and not shown."""
    if wait is None or wait[0] <= over:
        return ""
    return f"waiting {wait[0]:.0f}s ({wait[1]})"


def endpoints_up(up: tuple[int, int] | None) -> str:
    """The progress line's note on a fleet, e.g. "endpoints 2/3 up"; nothing with one endpoint."""
    if up is None:
        return ""
    return f"endpoints {up[0]}/{up[1]} up"


def print_evolve_summary(stats: dict, out: Path) -> None:
    ev = stats["evolutions"]
    table = Table(title=f"evolinstruct run: {out}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    dropped = sum((stats.get("seeds_eliminated") or {}).values())
    table.add_row("seeds", f"{stats['seeds']} ({stats['seeds_answered']} answered, "
                  + (f"{dropped} answers dropped, " if dropped else "")
                  + f"{stats['skipped_empty_seeds']} empty skipped)")
    table.add_row("evolutions", f"{ev['attempted']}/{ev['planned']} attempted: [green]{ev['kept']} kept[/], "
                  f"[yellow]{ev['eliminated']} eliminated[/], [red]{ev['errors']} errors[/]")
    for reason, n in stats["eliminated"].items():
        table.add_row(f"  {reason}", str(n))
    for epoch, c in stats["by_epoch"].items():
        table.add_row(f"epoch {epoch}", f"{c.get('kept', 0)} kept / {c.get('attempted', 0)} attempted")
    table.add_row("ops (kept/attempted)", ", ".join(f"{op} {c.get('kept', 0)}/{c.get('attempted', 0)}" for op, c in stats["by_op"].items()))
    task = stats.get("task")
    if isinstance(task, dict):  # a task's own checks (tasks/): its rule counts; the rest is in stats.json
        rules = ", ".join(f"{reason} {n}" for reason, n in (task.get("rules") or {}).items())
        table.add_row(f"task {task.get('name', '')}", rules or "no eliminations by its own rules")
    weights = stats.get("op_weights")
    if isinstance(weights, dict) and weights.get("adaptive"):  # --op-weights adaptive: what the pilot chose
        table.add_row("adaptive weights", ", ".join(f"{op} {w:.2f}" for op, w in weights["adaptive"].items()))
    table.add_row("llm calls", f"{stats['llm_calls']} sent, {stats['cache_hits']} from cache, {stats['failed_calls']} failed")
    table.add_row("tokens", f"{stats['tokens']['prompt']} prompt + {stats['tokens']['completion']} completion")
    if stats.get("truncated_answers_kept"):
        table.add_row("truncated", f"{stats['truncated_answers_kept']} kept answers cut off at --max-tokens, marked "
                      '"truncated": true (--drop-truncated drops them)')
    if "cost" in stats:
        table.add_row("cost", f"${stats['cost']['this_run']:.4f} this run, ${stats['cost']['total']:.4f} in total")
    table.add_row("time", f"{stats['seconds']:.1f}s (total {stats['seconds_total']:.1f}s)")
    table.add_row("dataset", f"{stats['dataset_rows']} rows -> {out / 'dataset.jsonl'}")
    Console().print(table)
    if stats.get("stopped_by") == "pilot_incomplete":
        console.print("[yellow]the adaptive pilot had failed calls[/]: the other seeds wait for it; rerun to retry them.")
    elif stats.get("stopped_by"):
        console.print(f"[yellow]stopped by --{stats['stopped_by'].replace('_', '-')}[/]: rerun with a larger budget to continue.")
    if ev["errors"] or stats["seed_errors"]:
        example = f" (e.g. {plain(stats['first_error'])})" if stats.get("first_error") else ""
        console.print(f"[red]some calls failed[/]{example}: see errors.jsonl; rerun the same command to retry them.",
                      highlight=False)


# ------------------------------------------------------------------------------------------ score
def score_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), TextColumn("[red]unparsed {task.fields[unparsed]}[/]"),
        console=console, transient=False,
    )


def print_score_summary(stats: dict[str, Any], run_dir: Path) -> None:
    Console().print(score_table(stats, run_dir))


def score_table(stats: dict[str, Any], run_dir: Path) -> Table:
    """Mean score by epoch next to the seeds' (the paper's table), with parse failures."""
    scores = stats.get("scores", {})
    epochs = sorted({int(e) for entry in scores.values() for e in entry["by_epoch"]})
    table = Table(title=f"scores: {run_dir}", title_justify="left")
    table.add_column("scorer", style="bold")
    for epoch in epochs:
        table.add_column("seeds" if epoch == 0 else f"epoch {epoch}", justify="right")
    for name in ("all", "scored", "parse failures"):
        table.add_column(name, justify="right")
    for scorer, entry in scores.items():
        cells = [_fmt(entry["by_epoch"].get(str(e))) for e in epochs]
        failures = entry["parse_failures"]
        table.add_row(scorer, *cells, _fmt(entry["mean"]), str(entry["scored"]),
                      f"[red]{failures}[/]" if failures else "0")
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ------------------------------------------------------------------------------------------ filter
def print_filter_summary(stats: dict[str, Any]) -> None:
    """What each filter stage removed and why; a stage that is off is listed only if it removed rows."""
    from ..quality.filter.run import FILTERS, FilterConfig

    table = Table(title=f"evolinstruct filter: {stats['source']}", title_justify="left")
    table.add_column("stage", style="bold")
    table.add_column("in", justify="right")
    table.add_column("removed", justify="right")
    table.add_column("reasons")
    config = FilterConfig(**stats["settings"])
    enabled = {f.name: f.enabled(config) for f in FILTERS}
    for stage in stats["stages"]:
        if not enabled[stage["stage"]] and not stage["removed"]:
            continue
        reasons = ", ".join(f"{r} {n}" for r, n in stage["by_reason"].items())
        table.add_row(stage["stage"], str(stage["in"]), str(stage["removed"]), reasons)
    table.add_row("[green]kept[/]", "", f"[green]{stats['rows_out']}[/]", f"of {stats['rows_in']} -> {stats['output_dir']}")
    if stats.get("rank_by_used"):
        table.caption = stats.get("rank_note") or f"ranked by {stats['rank_by_used']}"
    Console().print(table)


# ------------------------------------------------------------------------------------------ eval
def eval_progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("[yellow]unparsed {task.fields[unparsed]}[/] [red]failed {task.fields[failed]}[/]"),
                    console=console)


def _num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def headline(results: dict[str, Any]) -> str:
    cap = results.get("capacity_pct")
    if cap is None:
        return (f"no judged questions: {results['unparsed']} of {results['verdicts']} verdicts could not be parsed "
                "(a stronger judge follows the format; see docs/EVAL.md)")
    low, high = results["bootstrap"]["capacity_ci"]
    return (f"{results['model']}: {cap:.1f}% of the reference's score (95% CI {_num(low, 1)}-{_num(high, 1)}); "
            f"more than 90% on {results['skills_over_90']} of {results['n_skills']} skills")


def print_results(results: dict[str, Any], console: Console, out_dir: str) -> None:
    single = results.get("mode") == "single"
    group = "category" if single or results["testset"] in ("vicuna", "mtbench") else "skill"
    console.print(f"[bold]{results['testset']}[/]: model {results['model']} vs reference {results['reference']}, "
                  f"judged by {results['judge']}" + ("" if single else f" (position: {results['position']})"))
    table = Table(title=f"per {group}", title_justify="left")
    for column, justify in ((group, "left"), ("n", "right"), ("model", "right"), ("reference", "right"),
                            ("capacity", "right"), ("95% CI", "right")):
        table.add_column(column, justify=justify)
    for row in results["skills"]:
        cap = row["capacity_pct"]
        style = "" if cap is None else ("green" if cap > 90 else "yellow" if cap > 70 else "red")
        ci = "-" if row["ci_low"] is None else f"{row['ci_low']:.0f}-{row['ci_high']:.0f}%"
        table.add_row(row["skill"], f"{row['n']}/{row['n_items']}", _num(row["model_score"]), _num(row["reference_score"]),
                      f"[{style}]{_num(cap, 1, '%')}[/]" if style else "-", ci)
    console.print(table)
    if results.get("difficulty_bins"):
        bins = Table(title="by difficulty", title_justify="left")
        for column in ("difficulty", "n", "model", "reference", "capacity", "95% CI"):
            bins.add_column(column, justify="left" if column == "difficulty" else "right")
        for row in results["difficulty_bins"]:
            ci = "-" if row["ci_low"] is None else f"{row['ci_low']:.0f}-{row['ci_high']:.0f}%"
            bins.add_row(row["bin"], f"{row['n']}/{row['n_items']}", _num(row["model_score"]), _num(row["reference_score"]),
                         _num(row["capacity_pct"], 1, "%"), ci)
        console.print(bins)
    if single and results.get("turns"):
        turns = Table(title="MT-Bench mean rating per turn", title_justify="left")
        for column in ("turn", "n", "model", "reference"):
            turns.add_column(column, justify="right")
        for row in results["turns"]:
            turns.add_row(str(row["turn"]), str(row["n"]), _num(row["model_score"]), _num(row["reference_score"]))
        console.print(turns)
    wtl = results["win_tie_loss"]
    win_low, win_high = results["bootstrap"]["win_rate_ci"]
    console.print(f"win/tie/loss vs the reference: [green]{wtl['win']}[/]/{wtl['tie']}/[red]{wtl['loss']}[/]"
                  + ("" if results.get("win_rate") is None else
                     f"  (win rate {results['win_rate']:.2f}, 95% CI {_num(win_low)}-{_num(win_high)})"))
    pc = results.get("position_consistency")
    if pc and pc["pairs"]:
        console.print(f"position consistency: {pc['consistent']} of {pc['pairs']} questions get the same winner in both orders")
    unparsed_style = "yellow" if results["unparsed"] else "green"
    console.print(f"[{unparsed_style}]unparsed verdicts: {results['unparsed']} of {results['verdicts']}[/]"
                  + (f"; [red]{results['failed_items']} questions failed[/] (rerun to retry)" if results["failed_items"] else ""))
    calls = results["calls"]
    console.print(f"llm calls: {calls['sent']} sent, {calls['cache_hits']} from cache, {calls['failed']} failed; "
                  f"{results['seconds']:.1f}s")
    console.print(f"[bold]{headline(results)}[/]")
    console.print(f"wrote {out_dir}/results.json, answers.jsonl, judgments.jsonl, report.html")


def print_human_stats(stats: dict[str, Any], console: Console) -> None:
    from ..evaluate.human import CRITERIA

    if not any(c["rankings"] for c in stats["criteria"].values()):
        console.print("[yellow]no ranks filled in yet[/]: raters fill the rank_* columns (1 = best)")
    table = Table(title="mean rank (1 = best)", title_justify="left")
    table.add_column("system")
    for criterion in CRITERIA:
        table.add_column(criterion, justify="right")
    for system in stats["systems"]:
        cells = []
        for criterion in CRITERIA:
            mean = stats["criteria"][criterion]["mean_rank"][system]
            cells.append("-" if mean is None else f"{mean:.2f}")
        table.add_row(system, *cells)
    console.print(table)
    pairs = Table(title="win rate, overall (ties count half)", title_justify="left")
    for column in ("pair", "win", "tie", "loss", "win rate"):
        pairs.add_column(column, justify="left" if column == "pair" else "right")
    for name, p in stats["criteria"]["overall"]["pairwise"].items():
        pairs.add_row(name, str(p["win"]), str(p["tie"]), str(p["loss"]), "-" if p["win_rate"] is None else f"{p['win_rate']:.2f}")
    console.print(pairs)


# ------------------------------------------------------------------------------------------ estimate
def _short(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}" if suffix != "k" else f"{value / 1e3:.0f}k"
    return f"{value:,.0f}"


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _range(values: list[float] | None, money: bool = False) -> str:
    if not values:
        return "-"
    lo, hi = values
    fmt = _usd if money else _short
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}-{fmt(hi)}"


def print_estimate(plan: dict[str, Any]) -> None:
    """An estimate (evolve/estimate.py `Estimate.to_dict()`): nothing was sent."""
    purposes = plan["by_purpose"]
    models = sorted({e["model"] for e in purposes.values()})
    stored = any(e["stored"] for e in purposes.values())  # a resumed run: the stored calls are not sent again
    priced = "cost_online" in plan
    title = f"estimate: {plan['command']} of {plan['items']:,} items"
    title += (f" x {plan['epochs']} epochs" if plan.get("epochs") else "") + f" with {', '.join(models)}"
    table = Table(title=title, title_justify="left")
    columns = ["purpose", "calls", *(["stored", "to send"] if stored else []), "prompt tok", "completion tok",
               *(["cost", "batch cost"] if priced else [])]
    for column in columns:
        table.add_column(column, justify="left" if column == "purpose" else "right")

    def row(name: str, e: dict[str, Any]) -> list[str]:
        cells = [name, _range(e["calls"])]
        if stored:
            cells += [f"{e.get('stored', 0):,}" if "stored" in e else "", _range(e.get("to_send") or e.get("calls_to_send"))]
        cells += [_range(e["prompt_tokens"]), _range(e["completion_tokens"])]
        if priced:
            cells += [_range(e.get("cost_online"), money=True), _range(e.get("cost_batch"), money=True)]
        return cells

    for purpose, e in purposes.items():
        table.add_row(*row(purpose, e))
    table.add_row(*row("[bold]all[/]", plan))
    Console().print(table)
    lines = []
    if "elimination_rate" in plan:
        lines.append(f"elimination rate {plan['elimination_rate']:.0%} ({plan['elimination_source']})")
    if "time_s" in plan:
        lo, hi = plan["time_s"]
        lines.append(f"time {lo:,.0f} - {hi:,.0f} s at --concurrency {plan['concurrency']} "
                     f"and {plan.get('latency_s', 0):g} s per call ({plan.get('latency_source', '')})")
    lines.append("tokens counted with: " + ", ".join(f"{p} {t}" for p, t in plan["tokenizers"].items()))
    lines += plan.get("notes", [])
    for line in lines:
        console.print(escape(line), highlight=False)
    console.print("nothing was sent and nothing was written")


def print_status(info: dict[str, Any], run_dir: Path) -> None:
    """`evolinstruct status`: the run's numbers, then one row per open provider batch."""
    table = Table(title=f"evolinstruct status: {run_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("records", ", ".join(f"{n} {s}" for s, n in sorted(info["records"].items())) or "none yet")
    by_purpose = ", ".join(f"{p} {n}" for p, n in info["calls_by_purpose"].items())
    table.add_row("calls", f"{info['calls']} stored ({by_purpose}), {info['failed_calls']} failed")
    table.add_row("batch rounds", str(info["rounds"]))
    table.add_row("batches", ", ".join(f"{n} {s}" for s, n in info["batches"].items()) or "none")
    if "cost" in info:
        cost = info["cost"]
        split = ", ".join(f"{m} ${v:.4f}" for m, v in cost.items() if m != "total")
        table.add_row("cost so far", f"${cost['total']:.4f} ({split})")
    console.print(table)
    if info["batches_open"]:
        pending = Table(title="open batches", title_justify="left")
        # The batch id is what the provider's console and support ask for: whole, never cut to "msgbatch_…".
        ids = [b["batch_id"] or b["id"] for b in info["batches_open"]]
        pending.add_column("batch", no_wrap=True, min_width=max(len(i) for i in ids))
        for column in ("round", "model", "state", "provider status", "requests", "counts"):
            pending.add_column(column, overflow="fold")
        for b in info["batches_open"]:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(b["counts"].items()))
            pending.add_row(escape(b["batch_id"] or b["id"]), str(b["round"]), escape(b["model"]), b["state"],
                            escape(b["status"] or "-"), str(b["requests"]), escape(counts) or "-")
        console.print(pending)
# ---------------------------------------------------------------------------------------------- optimize
def optimize_event(event: dict[str, Any]) -> str:
    """One line per finished optimization step, or per holdout side started."""
    if event["event"] == "holdout":
        return f"holdout: evolving the held-out seeds with the {event['side']} method"
    dev = event["dev"]
    verdict = (f"candidate {event['accepted']} accepted" + ("" if event["changed"] else " (same method)")
               if event["accepted"] is not None else "kept the current method")
    return (f"step {event['step']}: current success {dev['success']:.2f} (paper {dev['success_paper']:.2f}, rules "
            f"{dev['success_rules']:.2f}), score {dev['score']:.3f}; {verdict}; {event['calls_sent']} calls sent, "
            f"{event['cache_hits']} from the store, {event['seconds']:.1f} s")


def holdout_table(holdout: dict[str, Any]) -> Table:
    """The held-out seeds evolved with the initial and the final method, side by side."""
    initial, final = holdout.get("initial") or {}, holdout.get("final") or {}
    same = " (the final method is the initial one: one run)" if holdout.get("final_is_initial") else ""
    table = Table(title=f"holdout: {holdout['seeds']} seeds x {holdout['epochs']} epoch(s){same}", title_justify="left")
    table.add_column("")
    table.add_column("initial method", justify="right")
    table.add_column("final method", justify="right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:g}"

    table.add_row("evolutions", num(initial.get("evolutions")), num(final.get("evolutions")))
    table.add_row("kept", num(initial.get("kept")), num(final.get("kept")))
    table.add_row("eliminated", pct(initial.get("elimination_rate")), pct(final.get("elimination_rate")))
    reasons = sorted(set(initial.get("elimination_by_reason", {})) | set(final.get("elimination_by_reason", {})))
    for reason in reasons:
        table.add_row(f"  {reason}", pct(initial.get("elimination_by_reason", {}).get(reason, 0.0)),
                      pct(final.get("elimination_by_reason", {}).get(reason, 0.0)))
    table.add_row("mean instruction chars (kept)", num(initial.get("mean_instruction_chars")),
                  num(final.get("mean_instruction_chars")))
    if initial.get("mean_difficulty") is not None or final.get("mean_difficulty") is not None:
        table.add_row("mean difficulty (kept)", num(initial.get("mean_difficulty")), num(final.get("mean_difficulty")))
    table.add_row("calls per kept evolution", num(initial.get("calls_per_kept")), num(final.get("calls_per_kept")))
    return table


def print_optimize_summary(stats: dict[str, Any], out: Path) -> None:
    init, final = stats.get("initial"), stats.get("final")
    if stats.get("stopped_by"):
        where = ("in the holdout comparison" if (stats.get("holdout") or {}).get("stopped_by")
                 else f"after {stats['steps_done']} of {stats['steps_planned']} steps")
        console.print(f"[yellow]stopped by {stats['stopped_by']}[/] {where}: rerun the same command to resume.")
    if init and final:
        console.print(f"dev success {init['success']:.2f} -> {final['success']:.2f} (paper {init['success_paper']:.2f} -> "
                      f"{final['success_paper']:.2f}, rules {init['success_rules']:.2f} -> {final['success_rules']:.2f}), "
                      f"score {init['score']:.3f} -> {final['score']:.3f}; accepted steps: "
                      f"{', '.join(map(str, stats['accepted_steps'])) or 'none'}", highlight=False)
    if stats.get("holdout"):
        console.print(holdout_table(stats["holdout"]))
    console.print(f"{stats['llm_calls']} calls sent, {stats['cache_hits']} from the store; method: "
                  f"{out / 'method.json'} (evolve --templates {out / 'method.json'}); report: evolinstruct report {out}",
                  highlight=False)
