"""Terminal tables of an evaluation's results.json (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


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
