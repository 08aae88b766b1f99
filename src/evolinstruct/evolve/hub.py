"""`export --format hf` and `--push-to-hub`: a run's training mix as a Hugging Face dataset directory.

OUT_DIR/
  README.md                               the dataset card: YAML metadata, then the run's numbers
  data/train-00000-of-00001.parquet       Parquet shards of SHARD_ROWS rows (split train)
  data/test-00000-of-00001.parquet        with test_size > 0: whole lineages held out (split test)

`datasets.load_dataset(OUT_DIR)` reads it through the card's `configs` (and so does the Hub once it is
pushed). Columns: instruction, input, output, messages (the conversation as [{role, content}], as the
openai export writes it), the lineage (id, root_id, parent_id, epoch, op, model), truncated, and scores
(a struct of floats, one field per scorer, null where a row has none) when the run has been scored.

`push_to_hub` uploads such a directory with huggingface_hub (the `hub` extra), which reads the token from
HF_TOKEN or a saved `hf auth login`. Only the calls up to the upload are tested here (docs/EXPORT.md).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..records import rng_for
from ..rundir import FILTER_STATS, STORE_FILE, RunDir, check_output_dir, read_jsonl
from ..store import RunStore
from .export import convert

SHARD_ROWS = 50_000
DATA_DIR = "data"
CARD = "README.md"
TAGS = ("evol-instruct", "synthetic", "instruction-tuning", "evolinstruct")
HUB_EXTRA = "pip install 'evolinstruct[hub]'"
# The Hub's size_categories, by upper bound (https://huggingface.co/docs/hub/datasets-cards).
SIZE_CATEGORIES = (
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
)
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class HubError(RuntimeError):
    """A dataset that cannot be pushed as asked; the message is one line saying what to do."""


def size_category(rows: int) -> str:
    for bound, name in SIZE_CATEGORIES:
        if rows < bound:
            return name
    return "n>1B"


# ------------------------------------------------------------------------------------------ reading
def _source(run_dir: Path, subset: str | None) -> tuple[Path, Path, dict[str, Any] | None]:
    """(the run's directory, the dataset.jsonl to export, the subset's filter_stats.json or None).
    `run_dir` may also be a subset's own directory (RUN_DIR/filtered/NAME)."""
    if subset is not None:
        folder = RunDir(run_dir).filtered(subset)
    elif (run_dir / FILTER_STATS).is_file() and not (run_dir / STORE_FILE).is_file():
        folder, run_dir = run_dir, run_dir.parent.parent
    else:
        folder = run_dir
    dataset = folder / "dataset.jsonl"
    if not dataset.is_file():
        hint = f"run `evolinstruct filter {run_dir} --name {subset}` first" if subset else f"run `evolinstruct evolve ... -o {run_dir}` first"
        raise FileNotFoundError(f"{dataset}: no dataset here; {hint}")
    filters = json.loads((folder / FILTER_STATS).read_text("utf-8")) if (folder / FILTER_STATS).is_file() else None
    return run_dir, dataset, filters


def _test_roots(root_rows: Counter, test_size: float, seed: int) -> set[str]:
    """Whole lineages for the test split: about `test_size` of the rows, drawn from `seed`, never all of them."""
    if test_size <= 0:
        return set()
    total = sum(root_rows.values())
    roots = sorted(root_rows)
    if len(roots) < 2:
        raise ValueError("--test-size needs rows from at least 2 seeds (lineages are held out whole)")
    rng_for("hf-test-split", seed).shuffle(roots)
    target = max(1, round(test_size * total))
    held: set[str] = set()
    n = 0
    for root in roots:
        if n >= target or n + root_rows[root] >= total:
            break
        held.add(root)
        n += root_rows[root]
    return held


# ------------------------------------------------------------------------------------------ writing
def _schema(scorers: list[str]) -> pa.Schema:
    fields = [
        pa.field("instruction", pa.string()),
        pa.field("input", pa.string()),
        pa.field("output", pa.string()),
        pa.field("messages", pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))),
        pa.field("id", pa.string()),
        pa.field("root_id", pa.string()),
        pa.field("parent_id", pa.string()),
        pa.field("epoch", pa.int32()),
        pa.field("op", pa.string()),
        pa.field("model", pa.string()),
        pa.field("truncated", pa.bool_()),
    ]
    if scorers:
        fields.append(pa.field("scores", pa.struct([pa.field(name, pa.float64()) for name in scorers])))
    return pa.schema(fields)


def _column_row(row: dict[str, Any], scorers: list[str]) -> dict[str, Any]:
    messages = next(convert([row], "openai"))["messages"]
    out = {
        "instruction": row.get("instruction", ""),
        "input": row.get("input", "") or "",
        "output": row.get("output", ""),
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "id": row.get("id"),
        "root_id": row.get("root_id"),
        "parent_id": row.get("parent_id"),
        "epoch": row.get("epoch"),
        "op": row.get("op"),
        "model": row.get("model"),
        "truncated": bool(row.get("truncated", False)),
    }
    if scorers:
        scores = row.get("scores")
        out["scores"] = ({name: None if scores.get(name) is None else float(scores[name]) for name in scorers}
                         if isinstance(scores, dict) and scores else None)
    return out


class _SplitWriter:
    """Rows of one split into data/SPLIT-0000i-of-0000n.parquet, SHARD_ROWS at a time."""

    def __init__(self, folder: Path, split: str, rows: int, schema: pa.Schema, shard_rows: int) -> None:
        self.folder, self.split, self.schema, self.shard_rows = folder, split, schema, shard_rows
        self.shards = max(1, math.ceil(rows / shard_rows)) if rows else 0
        self.buffer: list[dict[str, Any]] = []
        self.written: list[str] = []

    def add(self, row: dict[str, Any]) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        name = f"{self.split}-{len(self.written):05d}-of-{self.shards:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema), self.folder / name)
        self.written.append(f"{DATA_DIR}/{name}")
        self.buffer = []


def export_hf(
    run_dir: str | Path,
    out_dir: str | Path,
    license: str = "unknown",
    test_size: float = 0.0,
    seed: int = 0,
    command: str | None = None,
    subset: str | None = None,
    overwrite: bool = False,
    shard_rows: int = SHARD_ROWS,
    repo_id: str | None = None,
) -> dict[str, Any]:
    """Write RUN_DIR's training mix (or its filtered subset `subset`) as a Hugging Face dataset directory.

    `license`: the card's license id (the Hub's list: cc-by-nc-4.0, apache-2.0, other, ...). `test_size`: the
    share of rows held out as split `test`, whole lineages, drawn from `seed`. `command`: the exact command
    line, for the card; `repo_id`: the Hub repo it is meant for, for the card's loading line. An OUT_DIR that is not empty is refused unless `overwrite` (which replaces only
    README.md and data/). Returns what was written."""
    if not 0 <= test_size < 1:
        raise ValueError("--test-size must be at least 0 and below 1 (a share of the rows)")
    if not _LICENSE_ID.match(license or ""):
        raise ValueError(f"--license '{license}': give a license id such as cc-by-nc-4.0, apache-2.0 or other")
    if shard_rows < 1:
        raise ValueError("shard rows must be 1 or more")
    run_dir, dataset, filters = _source(Path(run_dir), subset)
    out_dir = check_output_dir(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"{out_dir}: not empty; choose a new directory, or overwrite (replaces README.md and data/)")

    # Pass 1: lineages, scorers and counts; nothing is held but a root id per row.
    root_rows: Counter = Counter()
    scorers: set[str] = set()
    for row in read_jsonl(dataset):
        root_rows[row.get("root_id") or row.get("id") or ""] += 1
        if isinstance(row.get("scores"), dict):
            scorers.update(row["scores"])
    total = sum(root_rows.values())
    if total == 0:
        raise ValueError(f"{dataset}: no rows to export")
    held = _test_roots(root_rows, test_size, seed)
    n_test = sum(root_rows[r] for r in held)
    names = sorted(scorers)
    schema = _schema(names)

    # Pass 2: the shards, into a staging folder beside the target, moved in when complete.
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / DATA_DIR).mkdir(parents=True)
    try:
        writers = {"train": _SplitWriter(staging / DATA_DIR, "train", total - n_test, schema, shard_rows),
                   "test": _SplitWriter(staging / DATA_DIR, "test", n_test, schema, shard_rows)}
        by_epoch: dict[str, Counter] = {"train": Counter(), "test": Counter()}
        for row in read_jsonl(dataset):
            split = "test" if (row.get("root_id") or row.get("id") or "") in held else "train"
            writers[split].add(_column_row(row, names))
            by_epoch[split][str(row.get("epoch"))] += 1
        for writer in writers.values():
            writer.flush()
        splits = {split: {"rows": total - n_test if split == "train" else n_test,
                          "lineages": len(root_rows) - len(held) if split == "train" else len(held),
                          "files": writers[split].written, "by_epoch": dict(sorted(by_epoch[split].items()))}
                  for split in ("train", "test") if writers[split].written}
        card = dataset_card(run_dir, splits, schema, license=license, command=command, filters=filters,
                            subset=subset, repo_id=repo_id, seed=seed, test_size=test_size)
        (staging / CARD).write_text(card, encoding="utf-8")
        shutil.rmtree(out_dir / DATA_DIR, ignore_errors=True)
        os.replace(staging / DATA_DIR, out_dir / DATA_DIR)
        os.replace(staging / CARD, out_dir / CARD)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"out_dir": str(out_dir), "rows": total, "splits": splits, "columns": schema.names,
            "card": str(out_dir / CARD), "license": license}


# ------------------------------------------------------------------------------------------ the card
def _yaml_list(key: str, values: list[Any], indent: str = "") -> list[str]:
    return [f"{indent}{key}:"] + [f"{indent}- {json.dumps(v, ensure_ascii=False)}" for v in values]


def _front_matter(license: str, rows: int, splits: list[str], name: str) -> str:
    lines = ["---", f"license: {license}", f"pretty_name: {json.dumps(name, ensure_ascii=False)}"]
    lines += _yaml_list("task_categories", ["text-generation"])
    lines += _yaml_list("language", ["en"])
    lines += _yaml_list("size_categories", [size_category(rows)])
    lines += _yaml_list("tags", list(TAGS))
    lines += ["configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: {DATA_DIR}/{split}-*"]
    return "\n".join(lines + ["---", ""])


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}".rstrip("0").rstrip(".")
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out + [""]


def _eliminated_by_epoch(run_dir: Path) -> dict[str, Counter]:
    """reason -> epoch -> count, from RUN_DIR/eliminated.jsonl (empty when there is none)."""
    path = RunDir(run_dir).eliminated
    out: dict[str, Counter] = {}
    if path.is_file():
        for row in read_jsonl(path):
            out.setdefault(str(row.get("reason")), Counter())[str(row.get("epoch"))] += 1
    return out


def _run_meta(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The bound config and the roles stored with the run (empty when there is no store)."""
    if not (run_dir / STORE_FILE).is_file():
        return {}, {}, []
    store = RunStore(run_dir, readonly=True)
    try:
        return store.get_meta("config") or {}, store.get_meta("roles") or {}, store.get_meta("commands") or []
    finally:
        store.close()


def dataset_card(
    run_dir: Path, splits: dict[str, dict[str, Any]], schema: pa.Schema, license: str, command: str | None,
    filters: dict[str, Any] | None, subset: str | None, repo_id: str | None = None, seed: int = 0,
    test_size: float = 0.0,
) -> str:
    """README.md: the Hub's YAML metadata, then how the data was made, with the run's own numbers."""
    stats = RunDir(run_dir).read_stats()
    config, roles, run_commands = _run_meta(run_dir)
    rows = sum(s["rows"] for s in splits.values())
    name = repo_id.split("/")[-1] if repo_id else run_dir.resolve().name + (f"-{subset}" if subset else "")
    out = [_front_matter(license, rows, list(splits), name), f"# {name}", ""]
    out += [f"Instruction data made with Evol-Instruct ([WizardLM](https://arxiv.org/abs/2304.12244)) by "
            f"evolinstruct {__version__}: seed instructions rewritten epoch after epoch into harder ones, failed "
            "evolutions eliminated, every kept instruction answered. The seeds and every kept evolution form the "
            "training mix.", ""]
    load = (f'ds = load_dataset("{repo_id}")' if repo_id
            else 'ds = load_dataset("path/to/this/directory")  # or "OWNER/NAME" once pushed to the Hub')
    out += ["```python", "from datasets import load_dataset", "", load, "```", ""]

    out += ["## Splits", ""]
    out += _table(["split", "rows", "lineages", "files"],
                  [[s, v["rows"], v["lineages"], len(v["files"])] for s, v in splits.items()])
    epochs = sorted({e for v in splits.values() for e in v["by_epoch"]}, key=lambda e: int(e) if e.isdigit() else -1)
    out += ["Rows by epoch (epoch 0: the seeds):", ""]
    out += _table(["epoch", *splits], [[e, *[v["by_epoch"].get(e, 0) for v in splits.values()]] for e in epochs])
    if "test" in splits:
        out += [f"The test split holds whole lineages (a seed with all its evolutions), about {test_size:.0%} of the "
                f"rows, drawn with seed {seed}: no evolution of a test seed is in train.", ""]

    out += ["## Columns", ""]
    described = {
        "instruction": "the instruction (a seed's, or an evolution's)", "input": "the seed's input, if any",
        "output": "the response", "messages": "the conversation as chat messages (role, content)",
        "id": "the record's id", "root_id": "the id of its seed (its lineage)", "parent_id": "the record it evolved from",
        "epoch": "0 for seeds, then the evolution round", "op": "the evolving operation (seed for seeds)",
        "model": "the model that wrote the instruction", "truncated": "the response was cut off at max tokens",
        "scores": "scores from `evolinstruct score` (null where absent)",
    }
    out += _table(["column", "type", "what"], [[f.name, str(f.type), described.get(f.name, "")] for f in schema])

    out += ["## How it was made", ""]
    models = stats.get("models") or {k: (v or {}).get("model") for k, v in roles.items() if v}
    facts = [
        ("seeds", stats.get("seeds")),
        ("seed file", config.get("seeds_file")),
        ("seed limit", config.get("limit")),
        ("epochs", config.get("epochs")),
        ("seed responses", config.get("seed_responses")),
        ("template set", stats.get("templates") or config.get("templates")),
        ("operation weights", config.get("op_weights") or ("uniform" if config else None)),
        ("equality check", config.get("equality_check")),
        ("sampling", ", ".join(f"{k} {config[k]}" for k in ("temperature", "top_p", "max_tokens") if k in config) or None),
        ("run seed", config.get("seed")),
    ]
    facts += [(f"{role} model", model) for role, model in models.items() if model]
    facts += [("dataset rows in the run", stats.get("dataset_rows")), ("kept evolutions", stats.get("kept")),
              ("LLM calls", stats.get("stored_calls")), ("evolinstruct", __version__)]
    out += _table(["", "value"], [[k, v] for k, v in facts if v is not None])

    evolutions = stats.get("evolutions") or {}
    if evolutions:
        out += ["### Evolutions", ""]
        out += _table(["planned", "attempted", "kept", "eliminated", "errors"],
                      [[evolutions.get(k, 0) for k in ("planned", "attempted", "kept", "eliminated", "errors")]])
    if stats.get("eliminated"):
        out += ["### Eliminated, by reason", ""]
        out += _table(["reason", "count"], [[r, n] for r, n in sorted(stats["eliminated"].items())])
    reasons_by_epoch = _eliminated_by_epoch(run_dir)
    if reasons_by_epoch:
        epochs = sorted({e for c in reasons_by_epoch.values() for e in c}, key=int)
        out += ["### Eliminated, by reason and epoch", ""]
        out += _table(["reason", *[f"epoch {e}" for e in epochs]],
                      [[r, *[c.get(e, 0) for e in epochs]] for r, c in sorted(reasons_by_epoch.items())])
    if stats.get("by_epoch"):
        out += ["### By epoch", ""]
        out += _table(["epoch", "attempted", "kept", "eliminated", "errors"],
                      [[e, c.get("attempted", 0), c.get("kept", 0), c.get("eliminated", 0), c.get("error", 0)]
                       for e, c in sorted(stats["by_epoch"].items(), key=lambda kv: int(kv[0]))])
    scores = stats.get("scores") or {}
    if scores:
        epochs = sorted({e for s in scores.values() for e in (s.get("by_epoch") or {})}, key=int)
        out += ["### Scores by epoch (epoch 0: the seeds)", ""]
        out += _table(["scorer", *[f"epoch {e}" for e in epochs], "mean", "parse failures"],
                      [[name, *[(s.get("by_epoch") or {}).get(e, "") for e in epochs], s.get("mean", ""),
                        s.get("parse_failures", 0)] for name, s in sorted(scores.items())])
    if filters is not None:
        out += [f"### Filters applied (subset `{subset or run_dir.name}`)", ""]
        out += [f"{filters.get('rows_in', '?')} rows in, {filters.get('rows_out', '?')} out, "
                f"{filters.get('removed', '?')} removed.", ""]
        if filters.get("removed_by_reason"):
            out += _table(["reason", "removed"], [[r, n] for r, n in filters["removed_by_reason"].items()])
    if isinstance(stats.get("cost"), dict):
        out += [f"Cost of the calls: {stats['cost'].get('total')} {stats['cost'].get('currency', 'USD')}.", ""]
    commands = [*run_commands, *([command] if command else [])]
    if commands:
        out += ["### Commands", "", "The run's own, then the export's:" if command and run_commands else "", "```bash",
                *commands, "```", ""]
    out += ["## License", "", f"`{license}`, as given when exporting. Data evolved from seeds carries the seeds' "
            "terms (Alpaca's are CC BY-NC 4.0) and the generating models' terms of use.", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ the Hub
def hf_api(token: str | None = None) -> Any:
    """huggingface_hub's HfApi, imported only here; a missing package is a one-line HubError."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise HubError(f"pushing to the Hub needs huggingface_hub: {HUB_EXTRA}") from None
    return HfApi(token=token)


def push_to_hub(
    out_dir: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    api: Any = None,
    commit_message: str | None = None,
) -> str:
    """Upload an `export_hf` directory as the dataset repo `repo_id` (created if missing); returns its URL.

    The token: `token`, else HF_TOKEN, else the one `hf auth login` saved. Shards on the Hub that this
    export no longer has are deleted in the same commit, so a smaller re-export leaves no stale shard.
    `api` stands in for huggingface_hub.HfApi (tests)."""
    out_dir = Path(out_dir)
    if not _REPO_ID.match(repo_id or ""):
        raise HubError(f"--push-to-hub '{repo_id}': give a repo id as OWNER/NAME")
    if not (out_dir / CARD).is_file() or not any((out_dir / DATA_DIR).glob("*.parquet")):
        raise HubError(f"{out_dir}: no exported dataset here (README.md and {DATA_DIR}/*.parquet); "
                       f"run `evolinstruct export RUN_DIR --format hf -o {out_dir}` first")
    api = api if api is not None else hf_api(token)
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=str(out_dir),
            allow_patterns=[CARD, f"{DATA_DIR}/*.parquet"], delete_patterns=[f"{DATA_DIR}/*.parquet"],
            commit_message=commit_message or f"Upload with evolinstruct {__version__}",
        )
    except HubError:
        raise
    except Exception as exc:  # the Hub's errors (no token, no access, network): one line, never the token
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HubError(f"pushing {out_dir} to {repo_id} failed: {first} "
                       "(a token comes from HF_TOKEN or `hf auth login`)") from exc
    return str(getattr(url, "url", url) or f"https://huggingface.co/datasets/{repo_id}")
