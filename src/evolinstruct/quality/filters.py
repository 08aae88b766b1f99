"""`evolinstruct filter`: write a cleaned copy of a dataset, with a reason and evidence for every removal.

Stages run in this order, each switchable (FilterConfig):
scrub (refusals, prompt-template leftovers) -> min score -> decontamination -> exact duplicates ->
MinHash near-duplicates -> embedding near-duplicates -> selection to a budget.

Two passes over the source: the first decides (holding only ids, prompts, scores and signatures, plus
one embedding per surviving row), the second copies each row to dataset.jsonl or removed.jsonl. The
source is never written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..outputs import DATASET, write_json
from ..seeds import SeedColumns, SeedError, _fields, iter_raw
from .decontam import Decontaminator, EvalItem, default_eval_dir, read_eval_set
from .dedup import ExactDeduper, MinHashDeduper, greedy_diverse
from .selection import RANK_KEYS, available_keys, resolve_rank_key, row_length, score_of

log = logging.getLogger(__name__)

REMOVED = "removed.jsonl"
FILTER_STATS = "filter_stats.json"

# Stage of each removal reason, in pipeline order (the summary table and filter_stats.json follow it).
REASON_STAGE = {
    "empty_instruction": "scrub",
    "refusal": "scrub",
    "prompt_leftover": "scrub",
    "below_min_score": "min_score",
    "missing_score": "min_score",
    "eval_contamination": "decontam",
    "exact_duplicate": "exact",
    "near_duplicate_minhash": "minhash",
    "near_duplicate_embedding": "embedding",
    "selection_too_similar": "selection",
    "selection_over_budget": "selection",
}
STAGES = ("scrub", "min_score", "decontam", "exact", "minhash", "embedding", "selection")

# Refusals and AI boilerplate in responses (and instructions): the phrases the WizardLM and
# ShareGPT cleaning scripts drop. Specific phrases only: "I cannot stress enough" must survive.
REFUSAL_PATTERNS = [
    # the speaker talking about itself ("As an AI language model, I ..."), not "used as an AI assistant, it"
    r"\bas an ai(?: language model| model| assistant)?,? i\b",
    r"\bas a (?:large )?language model,? i\b",
    r"\bi(?:'|’)?m sorry,? but (?:i|as an ai) (?:cannot|can(?:'|’)?t|am unable|am not able)\b",
    r"\bi am sorry,? but (?:i|as an ai) (?:cannot|can(?:'|’)?t|am unable|am not able)\b",
    r"\bi apologi[sz]e,? but i (?:cannot|can(?:'|’)?t|am unable)\b",
    r"\bi (?:cannot|can(?:'|’)?t) (?:fulfill|comply with|assist with) (?:this|that|your)\b",
    r"\bi(?:'|’)?m (?:unable|not able) to (?:fulfill|comply with|assist with|help with) (?:this|that|your)\b",
    r"\bviolates? openai(?:'|’)?s (?:content |use case )?polic",
]
# Leftovers of the evolving prompt echoed into an instruction or response.
LEFTOVER_PATTERNS = [
    r"#\s*(?:the\s+)?given\s+prompt\s*#",
    r"#\s*rewritten\s+prompt\s*#",
    r"#\s*created\s+prompt\s*#",
    r"^\s*(?:the\s+)?(?:given|rewritten|created)\s+prompt\s*:",
    r"\b(?:given|rewritten|created) prompt\s*:",
]
_REFUSALS = [re.compile(p, re.IGNORECASE) for p in REFUSAL_PATTERNS]
_LEFTOVERS = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in LEFTOVER_PATTERNS]


@dataclass
class FilterConfig:
    scrub: bool = True
    min_scores: dict[str, float] = field(default_factory=dict)
    decontam: bool = True
    eval_sets: list[str] = field(default_factory=list)  # empty: every file of the default eval directory
    decontam_n: int = 5
    decontam_ratio: float = 0.7
    decontam_long_n: int = 13
    decontam_min_words: int = 5
    exact: bool = True
    minhash: bool = True
    minhash_threshold: float = 0.7
    shingle_size: int = 2
    num_perm: int = 128
    embed: bool = True
    embed_threshold: float = 0.95
    budget: int | None = None
    rank_by: str = "complexity*quality"
    diversity_threshold: float = 0.9
    block_rows: int = 1024

    def check(self) -> None:
        if self.rank_by not in RANK_KEYS:
            raise ValueError(f"--rank-by must be one of {', '.join(RANK_KEYS)}, not '{self.rank_by}'")
        for name in ("minhash_threshold", "embed_threshold", "decontam_ratio", "diversity_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in (0, 1], not {getattr(self, name)}")
        if self.budget is not None and self.budget < 0:
            raise ValueError("--budget must be 0 or more")


@dataclass(slots=True)
class Survivor:
    index: int  # row position in the source
    id: str
    instruction: str
    input: str
    scores: dict[str, Any] | None
    length: float


@dataclass
class FilterResult:
    out_dir: Path
    stats: dict[str, Any]


def scrub_evidence(instruction: str, input_text: str, output: str) -> tuple[str, dict[str, Any]] | None:
    if not instruction.strip():
        return "empty_instruction", {}
    for reason, patterns in (("prompt_leftover", _LEFTOVERS), ("refusal", _REFUSALS)):
        for fieldname, text in (("instruction", instruction), ("input", input_text), ("output", output)):
            for pattern in patterns:
                if found := pattern.search(text):
                    return reason, {"field": fieldname, "match": found.group(0), "pattern": pattern.pattern}
    return None


def _rows(path: Path, columns: SeedColumns) -> Iterator[tuple[int, str, Any, str, str, str]]:
    """(index, row id, raw item, instruction, input, output) for each source row.

    The id is the row's own "id", else 'file:line'; a repeated one (two ids alike, or a one-line JSON
    array) gets '#row number' appended, so every row has its own.
    """
    seen: set[str] = set()
    for index, (lineno, item) in enumerate(iter_raw(path)):
        if isinstance(item, dict) and columns.instruction not in item:
            instruction, input_text, output = "", "", ""  # counted as empty_instruction, like an empty cell
            if index == 0:
                _fields(path, lineno, item, columns)  # a missing column on the first row is a usage error
        else:
            instruction, input_text, output = _fields(path, lineno, item, columns)
        if isinstance(item, dict) and isinstance(item.get("id"), str | int) and item["id"] != "":
            row_id = str(item["id"])
        else:
            row_id = f"{path.name}:{lineno}"
        if row_id in seen:
            row_id = f"{row_id}#{index + 1}"
        seen.add(row_id)
        yield index, row_id, item, instruction, input_text, output


def load_eval_items(config: FilterConfig) -> tuple[list[EvalItem], list[dict[str, Any]]]:
    """Eval items to decontaminate against, and a note per file for filter_stats.json."""
    items: list[EvalItem] = []
    notes: list[dict[str, Any]] = []
    if config.eval_sets:
        for name in config.eval_sets:
            got = read_eval_set(Path(name), strict=True)
            items += got
            notes.append({"file": str(name), "items": len(got)})
        return items, notes
    eval_dir = default_eval_dir()
    if eval_dir is None:
        notes.append({"file": None, "items": 0, "note": "no default eval directory found; pass --eval-set FILE"})
        return items, notes
    for path in sorted(p for p in eval_dir.iterdir() if p.suffix.lower() in (".jsonl", ".json")):
        got = read_eval_set(path, strict=False)
        items += got
        note: dict[str, Any] = {"file": str(path), "items": len(got)}
        if not got:
            note["note"] = "no prompt field (e.g. reference answers): skipped"
        notes.append(note)
    return items, notes


def _embed_rows(survivors: list[Survivor]) -> np.ndarray:
    """One unit vector per row: [instruction ; input] embeddings, halves scaled so the whole has norm 1.

    Without an input the cosine of two rows is that of their instructions; with inputs it is the mean of
    the instruction and input cosines, so one passage under two different tasks is not a duplicate.
    """
    from .embeddings import embed_texts

    with_input = [i for i, s in enumerate(survivors) if s.input.strip()]
    vectors = embed_texts([s.instruction for s in survivors] + [survivors[i].input for i in with_input])
    n, dim = len(survivors), vectors.shape[1] if len(vectors) else 384
    out = np.zeros((n, 2 * dim), dtype=np.float32)
    out[:, :dim] = vectors[:n]
    if with_input:
        out[with_input, :dim] /= math.sqrt(2)
        out[with_input, dim:] = vectors[n:] / math.sqrt(2)
    return out


def filter_dataset(
    source: str | Path, out_dir: str | Path, config: FilterConfig | None = None, columns: SeedColumns | None = None
) -> FilterResult:
    """Filter `source` (a dataset or seed file) into out_dir/{dataset.jsonl, removed.jsonl, filter_stats.json}."""
    config = config or FilterConfig()
    config.check()
    columns = columns or SeedColumns()
    source, out_dir = Path(source), Path(out_dir)
    if (out_dir / DATASET).resolve() == source.resolve():
        raise ValueError(f"{source}: the output would overwrite the source; choose another -o directory")
    started = time.perf_counter()
    seconds: Counter[str] = Counter()
    removed: dict[int, tuple[str, dict[str, Any]]] = {}

    eval_notes: list[dict[str, Any]] = []
    decontaminator = None
    if config.decontam:
        items, eval_notes = load_eval_items(config)
        decontaminator = Decontaminator(
            items, n=config.decontam_n, min_ratio=config.decontam_ratio,
            long_n=config.decontam_long_n, min_words=config.decontam_min_words,
        )
    exact = ExactDeduper() if config.exact else None
    minhash = MinHashDeduper(config.minhash_threshold, config.shingle_size, config.num_perm) if config.minhash else None

    def timed(stage: str, check, *args):
        t = time.perf_counter()
        try:
            return check(*args)
        finally:
            seconds[stage] += time.perf_counter() - t

    # Pass 1: the per-row stages, streaming.
    survivors: list[Survivor] = []
    rows_in = 0
    score_keys: set[str] = set()
    for index, row_id, item, instruction, input_text, output in _rows(source, columns):
        rows_in += 1
        scores = item.get("scores") if isinstance(item, dict) and isinstance(item.get("scores"), dict) else None
        length = row_length(scores, instruction, input_text, output)
        prompt = f"{instruction}\n{input_text}" if input_text.strip() else instruction
        verdict: tuple[str, dict[str, Any]] | None = None
        if not instruction.strip():
            verdict = ("empty_instruction", {})
        elif config.scrub:
            verdict = timed("scrub", scrub_evidence, instruction, input_text, output)
        if verdict is None and config.min_scores:
            for key, minimum in config.min_scores.items():
                value = score_of(scores, key, length)
                if value is None:
                    verdict = ("missing_score", {"score": key, "min": minimum})
                elif value < minimum:
                    verdict = ("below_min_score", {"score": key, "value": value, "min": minimum})
                if verdict:
                    break
        if verdict is None and decontaminator is not None:
            if evidence := timed("decontam", decontaminator.check, prompt):
                verdict = ("eval_contamination", evidence)
        if verdict is None and exact is not None:
            if evidence := timed("exact", exact.check, row_id, instruction, input_text):
                verdict = ("exact_duplicate", evidence)
        if verdict is None and minhash is not None:
            if evidence := timed("minhash", minhash.check, row_id, instruction, input_text):
                verdict = ("near_duplicate_minhash", evidence)
        if verdict is not None:
            removed[index] = verdict
            continue
        survivors.append(Survivor(index, row_id, instruction, input_text, scores, length))
        score_keys |= available_keys(scores)
    seconds["read"] = time.perf_counter() - started - sum(seconds.values())

    # Embedding near-duplicates, in file order, a block at a time.
    vectors: np.ndarray | None = None
    if config.embed and survivors:
        t = time.perf_counter()
        kept, rejected, _, vectors = greedy_diverse(
            [s.id for s in survivors],
            lambda a, b: _embed_rows(survivors[a:b]),
            config.embed_threshold,
            block_rows=config.block_rows,
        )
        for pos, evidence in rejected.items():
            removed[survivors[pos].index] = ("near_duplicate_embedding", evidence)
        survivors = [survivors[pos] for pos in kept]
        seconds["embedding"] = time.perf_counter() - t

    # Selection: rank, then greedily keep diverse rows up to the budget.
    rank_key, rank_note = resolve_rank_key(config.rank_by, score_keys)
    if config.budget is not None:
        t = time.perf_counter()
        ranks = [score_of(s.scores, rank_key, s.length) for s in survivors]
        order = sorted(
            range(len(survivors)),
            key=lambda p: (ranks[p] is None, -(ranks[p] or 0.0), -survivors[p].length, survivors[p].index),
        )
        ranked = [survivors[p] for p in order]

        def vectors_for(a: int, b: int) -> np.ndarray:
            if vectors is not None:  # computed by the embedding stage, rows in survivor order
                return vectors[order[a:b]]
            return _embed_rows(ranked[a:b])

        if config.diversity_threshold >= 1.0:  # no diversity check: plain top-N, no embeddings needed
            chosen, too_similar, over = list(range(min(config.budget, len(ranked)))), {}, list(range(config.budget, len(ranked)))
        else:
            chosen, too_similar, over, _ = greedy_diverse(
                [s.id for s in ranked], vectors_for, config.diversity_threshold,
                limit=config.budget, block_rows=config.block_rows,
            )
        for pos, evidence in too_similar.items():
            removed[ranked[pos].index] = ("selection_too_similar", {**evidence, "rank": pos + 1})
        for pos in over:
            removed[ranked[pos].index] = (
                "selection_over_budget",
                {"rank": pos + 1, "rank_by": rank_key, "score": ranks[order[pos]], "budget": config.budget},
            )
        seconds["selection"] = time.perf_counter() - t

    # Pass 2: copy rows to the new dataset or to removed.jsonl, in source order.
    out_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    n_kept = n_removed = 0
    targets = {name: out_dir / (name + ".tmp") for name in (DATASET, REMOVED)}
    with open(targets[DATASET], "w", encoding="utf-8") as kept_file, open(targets[REMOVED], "w", encoding="utf-8") as removed_file:
        for index, row_id, item, *_ in _rows(source, columns):
            row = item if isinstance(item, dict) else {columns.instruction: item}
            if index in removed:
                reason, evidence = removed[index]
                row = {**row, "id": row_id, "reason": reason, "evidence": evidence}  # the id evidence refers to
                removed_file.write(json.dumps(row, ensure_ascii=False) + "\n")
                n_removed += 1
            else:
                kept_file.write(json.dumps(row, ensure_ascii=False) + "\n")
                n_kept += 1
    for name, tmp in targets.items():
        os.replace(tmp, out_dir / name)  # a reader never sees half a file
    seconds["write"] = time.perf_counter() - t

    by_reason = Counter(reason for reason, _ in removed.values())
    stages = []
    remaining = rows_in
    for stage in STAGES:
        gone = {r: n for r, n in by_reason.items() if REASON_STAGE[r] == stage}
        stages.append({"stage": stage, "in": remaining, "removed": sum(gone.values()), "by_reason": gone})
        remaining -= sum(gone.values())
    stats: dict[str, Any] = {
        "source": str(source),
        "output_dir": str(out_dir),
        "rows_in": rows_in,
        "rows_out": n_kept,
        "removed": n_removed,
        "removed_by_reason": {r: by_reason[r] for r in REASON_STAGE if by_reason[r]},
        "stages": stages,
        "settings": asdict(config),
        "eval_sets": eval_notes,
        "eval_items_too_short": decontaminator.skipped_short if decontaminator else 0,
        "rank_by_used": rank_key if config.budget is not None else None,
        "seconds": {k: round(v, 3) for k, v in seconds.items()} | {"total": round(time.perf_counter() - started, 3)},
    }
    if rank_note and config.budget is not None:
        stats["rank_note"] = rank_note
    write_json(out_dir / FILTER_STATS, stats)
    return FilterResult(out_dir, stats)


def filter_source(
    source: str | Path, name: str = "default", out: str | Path | None = None,
    config: FilterConfig | None = None, columns: SeedColumns | None = None,
) -> FilterResult:
    """SOURCE is a RUN_DIR (its dataset.jsonl, into RUN_DIR/filtered/NAME) or a file (into `out`)."""
    source = Path(source)
    if source.is_dir():
        dataset = source / DATASET
        if not dataset.exists():
            raise SeedError(f"{dataset}:0: no dataset here; run `evolinstruct evolve ... -o {source}` first")
        return filter_dataset(dataset, Path(out) if out else source / "filtered" / name, config, columns)
    if out is None:
        raise ValueError(f"{source}: filtering a file needs -o OUT_DIR (a RUN_DIR writes to RUN_DIR/filtered/NAME)")
    return filter_dataset(source, out, config, columns)


def summary_table(stats: dict[str, Any]):
    """A rich table of what each stage removed and why."""
    from rich.table import Table

    table = Table(title=f"evolinstruct filter: {stats['source']}", title_justify="left")
    table.add_column("stage", style="bold")
    table.add_column("in", justify="right")
    table.add_column("removed", justify="right")
    table.add_column("reasons")
    settings = stats["settings"]
    enabled = {
        "scrub": settings["scrub"], "min_score": bool(settings["min_scores"]), "decontam": settings["decontam"],
        "exact": settings["exact"], "minhash": settings["minhash"], "embedding": settings["embed"],
        "selection": settings["budget"] is not None,
    }
    for stage in stats["stages"]:
        if not enabled[stage["stage"]] and not stage["removed"]:
            continue
        reasons = ", ".join(f"{r} {n}" for r, n in stage["by_reason"].items())
        table.add_row(stage["stage"], str(stage["in"]), str(stage["removed"]), reasons)
    table.add_row("[green]kept[/]", "", f"[green]{stats['rows_out']}[/]", f"of {stats['rows_in']} -> {stats['output_dir']}")
    if stats.get("rank_by_used"):
        table.caption = stats.get("rank_note") or f"ranked by {stats['rank_by_used']}"
    return table
