"""Blind human ranking, as in the paper: raters rank the answers of each question, blind to the models.

`write_sheet` takes the answers from one or more EVAL_DIRs, shuffles them per question with a seeded
RNG and labels them A, B, ...; the letters' meaning goes to a separate key file, never into the sheet.
Raters rank the answers (1 = best, ties allowed) overall and on the paper's five criteria. The HTML
sheet is a form whose "Save CSV" button writes the same CSV as the CSV sheet; `import_sheet` reads a
filled CSV (one or more raters, via the optional `rater` column) and computes mean ranks and pairwise
win rates per criterion.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import defaultdict
from html import escape
from itertools import combinations
from pathlib import Path
from typing import Any

CRITERIA = ("overall", "relevance", "knowledgeable", "reasoning", "calculation", "accuracy")
RANK_COLUMNS = tuple(f"rank_{c}" for c in CRITERIA)
COLUMNS = ("sheet_id", "rater", "item", "letter", "question", "answer", *RANK_COLUMNS)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class HumanEvalError(ValueError):
    """A sheet, key or EVAL_DIR that cannot be used; one line naming the file."""


def _read_eval_dir(eval_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results_path, answers_path = eval_dir / "results.json", eval_dir / "answers.jsonl"
    for path in (results_path, answers_path):
        if not path.is_file():
            raise HumanEvalError(f"{path}: not found (run `evolinstruct eval -o {eval_dir}` first)")
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HumanEvalError(f"{results_path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    rows = []
    for lineno, line in enumerate(answers_path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise HumanEvalError(f"{answers_path}:{lineno}: malformed JSON line: {exc.msg}") from None
    return results, rows


def collect_systems(eval_dirs: list[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system labels, questions with each system's answer) over the questions every EVAL_DIR answered."""
    if not eval_dirs:
        raise HumanEvalError("no EVAL_DIR given")
    systems: list[str] = []
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    questions: dict[str, str] = {}
    order: list[str] = []
    for index, eval_dir in enumerate(eval_dirs):
        results, rows = _read_eval_dir(eval_dir)
        roles = ("model", "reference") if index == 0 else ("model",)
        for role in roles:
            label = f"{role}: {results.get(role, '?')} [{eval_dir.name}]"
            if label in systems:
                label = f"{label} #{index + 1}"
            systems.append(label)
            for row in rows:
                answer = row.get(f"{role}_answer")
                if "error" in row or not answer:
                    continue
                answers[str(row["id"])][label] = "\n\n".join(answer) if isinstance(answer, list) else str(answer)
                if index == 0:
                    questions[str(row["id"])] = "\n\n".join(row.get("turns") or [])
                    if str(row["id"]) not in order:
                        order.append(str(row["id"]))
    items = [{"id": i, "question": questions[i], "answers": answers[i]} for i in order if len(answers[i]) == len(systems)]
    if not items:
        raise HumanEvalError(f"no question was answered by all {len(systems)} systems in {', '.join(map(str, eval_dirs))}")
    return systems, items


def write_sheet(eval_dirs: list[Path], out: Path, key_path: Path | None = None, seed: int = 0,
                limit: int | None = None) -> tuple[Path, int, list[str]]:
    """Write the blind sheet (HTML or CSV by `out`'s suffix) and its key; returns (key path, questions, systems)."""
    if out.suffix.lower() not in (".html", ".htm", ".csv"):
        raise HumanEvalError(f"{out}: the sheet must be .html or .csv")
    systems, items = collect_systems(eval_dirs)
    items = items[:limit] if limit else items
    if len(systems) > len(LETTERS):
        raise HumanEvalError(f"at most {len(LETTERS)} systems per sheet, got {len(systems)}")
    rng = random.Random(seed)
    mapping: dict[str, dict[str, str]] = {}
    for item in items:
        shuffled = systems[:]
        rng.shuffle(shuffled)
        mapping[item["id"]] = {LETTERS[i]: system for i, system in enumerate(shuffled)}
    sheet_id = hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()[:12]
    key_path = key_path or out.with_name(out.stem + ".key.json")
    if key_path.resolve() == out.resolve():
        raise HumanEvalError(f"{key_path}: the key must not overwrite the sheet")
    out.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_text(json.dumps({"sheet_id": sheet_id, "seed": seed, "systems": systems, "criteria": list(CRITERIA),
                                    "eval_dirs": [str(d) for d in eval_dirs], "items": mapping}, indent=2) + "\n", encoding="utf-8")
    rows = [{"sheet_id": sheet_id, "rater": "", "item": item["id"], "letter": letter, "question": item["question"],
             "answer": item["answers"][mapping[item["id"]][letter]], **dict.fromkeys(RANK_COLUMNS, "")}
            for item in items for letter in sorted(mapping[item["id"]])]
    if out.suffix.lower() == ".csv":
        with open(out, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        out.write_text(_sheet_html(sheet_id, items, mapping), encoding="utf-8")
    return key_path, len(items), systems


def _sheet_html(sheet_id: str, items: list[dict[str, Any]], mapping: dict[str, dict[str, str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in CRITERIA)
    blocks = []
    for item in items:
        letters = sorted(mapping[item["id"]])
        answers = "".join(f'<div class="answer"><h3>Answer {letter}</h3><pre>{escape(item["answers"][mapping[item["id"]][letter]])}</pre></div>'
                          for letter in letters)
        inputs = "".join(
            f'<tr><th>{letter}</th>' + "".join(
                f'<td><input type="number" min="1" max="{len(letters)}" data-item="{escape(item["id"])}" data-letter="{letter}" '
                f'data-criterion="{c}" aria-label="{escape(item["id"])} {letter} {c}"></td>' for c in CRITERIA) + "</tr>"
            for letter in letters)
        blocks.append(f'<section class="q" data-item="{escape(item["id"])}" data-question="{escape(item["question"])}">'
                      f'<h2>Question {escape(item["id"])}</h2><pre class="question">{escape(item["question"])}</pre>{answers}'
                      f'<table><tr><th>answer</th>{head}</tr>{inputs}</table></section>')
    answers_js = json.dumps({item["id"]: {letter: item["answers"][system] for letter, system in mapping[item["id"]].items()}
                             for item in items}).replace("</", "<\\/")
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Blind ranking sheet {sheet_id}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:24px auto;padding:0 16px}}pre{{white-space:pre-wrap;background:#f8fafc;padding:8px}}
.answer{{border-left:3px solid #cbd5e1;padding-left:8px;margin:8px 0}}td input{{width:3.5em}}section.q{{border-bottom:1px solid #e2e8f0;padding:12px 0}}</style></head><body>
<h1>Blind ranking sheet</h1>
<p>For each question, rank the answers: 1 = best; equal answers may share a rank. Rank them overall and on each criterion:
<b>relevance</b> (answers what was asked), <b>knowledgeable</b> (correct, relevant knowledge), <b>reasoning</b> (sound steps),
<b>calculation</b> (correct arithmetic and formulas), <b>accuracy</b> (the final answer is right). You do not know which model wrote which answer.</p>
<p>Rater name: <input id="rater" type="text"> <button id="save" type="button">Save CSV</button> (then send the CSV back)</p>
{''.join(blocks)}
<script>
const SHEET_ID = {json.dumps(sheet_id)}, CRITERIA = {json.dumps(list(CRITERIA))}, ANSWERS = {answers_js};
function csvCell(v) {{ v = String(v); return /[",\\n\\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }}
function sheetCsv() {{
  const rows = [{json.dumps(list(COLUMNS))}];
  const rater = document.getElementById('rater').value;
  for (const q of document.querySelectorAll('section.q')) {{
    const item = q.dataset.item;
    for (const letter of Object.keys(ANSWERS[item]).sort()) {{
      const ranks = CRITERIA.map(c => q.querySelector(`input[data-letter="${{letter}}"][data-criterion="${{c}}"]`).value);
      rows.push([SHEET_ID, rater, item, letter, q.dataset.question, ANSWERS[item][letter], ...ranks]);
    }}
  }}
  return rows.map(r => r.map(csvCell).join(',')).join('\\r\\n') + '\\r\\n';
}}
document.getElementById('save').addEventListener('click', () => {{
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([sheetCsv()], {{type: 'text/csv'}}));
  a.download = 'sheet-' + SHEET_ID + '.csv';
  document.body.appendChild(a); a.click(); a.remove();
}});
</script></body></html>
"""


def import_sheet(sheet: Path, key_path: Path) -> dict[str, Any]:
    """Ranking statistics of a filled sheet: per criterion, each system's mean rank and pairwise win rates."""
    try:
        key = json.loads(key_path.read_text(encoding="utf-8"))
        mapping, systems = key["items"], key["systems"]
    except FileNotFoundError:
        raise HumanEvalError(f"{key_path}: not found") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise HumanEvalError(f"{key_path}: not a key file written by `evolinstruct eval human-sheet`") from None
    # ranks[criterion][(rater, item)][system] = rank
    ranks: dict[str, dict[tuple[str, str], dict[str, int]]] = {c: defaultdict(dict) for c in CRITERIA}
    try:
        f = open(sheet, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise HumanEvalError(f"{sheet}: not found") from None
    with f:
        reader = csv.DictReader(f)
        missing = [c for c in ("item", "letter", *RANK_COLUMNS) if c not in (reader.fieldnames or [])]
        if missing:
            raise HumanEvalError(f"{sheet}:1: missing columns {', '.join(missing)} (is this a sheet from `eval human-sheet`?)")
        for row in reader:
            line = reader.line_num
            if row.get("sheet_id") and row["sheet_id"] != key["sheet_id"]:
                raise HumanEvalError(f"{sheet}:{line}: sheet {row['sheet_id']} does not belong to key {key_path} ({key['sheet_id']})")
            system = mapping.get(row["item"], {}).get(row["letter"])
            if system is None:
                raise HumanEvalError(f"{sheet}:{line}: item {row['item']!r} answer {row['letter']!r} is not in the key")
            for criterion, column in zip(CRITERIA, RANK_COLUMNS, strict=True):
                value = (row.get(column) or "").strip()
                if not value:
                    continue  # a criterion left blank (e.g. calculation for a poem) is skipped
                try:
                    rank = int(float(value))
                except ValueError:
                    raise HumanEvalError(f"{sheet}:{line}: {column} {value!r} is not a rank (1 = best)") from None
                if not 1 <= rank <= len(mapping[row["item"]]):
                    raise HumanEvalError(f"{sheet}:{line}: {column} {rank} is outside 1-{len(mapping[row['item']])}")
                ranks[criterion][(row.get("rater") or "", row["item"])][system] = rank
    return ranking_stats(ranks, systems)


def ranking_stats(ranks: dict[str, dict[tuple[str, str], dict[str, int]]], systems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"systems": systems, "criteria": {}}
    for criterion, by_question in ranks.items():
        per_system: dict[str, list[int]] = defaultdict(list)
        firsts: dict[str, int] = defaultdict(int)
        for ranking in by_question.values():
            best = min(ranking.values()) if ranking else None
            for system, rank in ranking.items():
                per_system[system].append(rank)
                firsts[system] += rank == best
        pairwise = {}
        for a, b in combinations(systems, 2):
            win = tie = loss = 0
            for ranking in by_question.values():
                if a in ranking and b in ranking:
                    win += ranking[a] < ranking[b]
                    tie += ranking[a] == ranking[b]
                    loss += ranking[a] > ranking[b]
            n = win + tie + loss
            pairwise[f"{a} vs {b}"] = {"a": a, "b": b, "win": win, "tie": tie, "loss": loss,
                                       "win_rate": (win + 0.5 * tie) / n if n else None}
        out["criteria"][criterion] = {
            "rankings": len(by_question),
            "mean_rank": {s: (sum(per_system[s]) / len(per_system[s]) if per_system[s] else None) for s in systems},
            "n": {s: len(per_system[s]) for s in systems},
            "first_place": {s: firsts[s] for s in systems},
            "pairwise": pairwise,
        }
    out["raters"] = len({rater for by_question in ranks.values() for rater, _ in by_question})
    return out
