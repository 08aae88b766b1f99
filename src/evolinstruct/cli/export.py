"""`evolinstruct export`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from .console import console, fail


def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A RUN_DIR written by `evolinstruct evolve`.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="alpaca, sharegpt, openai (a JSONL file) or hf (a Hugging Face dataset directory: Parquet shards and a dataset card).")] = "alpaca",
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Output JSONL file (default export.jsonl), or the directory for -f hf.")] = None,
    subset: Annotated[str | None, typer.Option(help="Export RUN_DIR/filtered/NAME (written by `evolinstruct filter`) instead of the run's dataset.")] = None,
    test_size: Annotated[float, typer.Option(min=0.0, max=0.99, help="-f hf: share of rows held out as split 'test', whole lineages.")] = 0.0,
    license_id: Annotated[str, typer.Option("--license", help="-f hf: the dataset card's license id (e.g. cc-by-nc-4.0 for Alpaca-derived data, apache-2.0, other; default unknown).")] = "unknown",
    seed: Annotated[int, typer.Option(help="-f hf: seed of the test split.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="-f hf: replace README.md and data/ in a non-empty directory.")] = False,
    push_to_hub: Annotated[str | None, typer.Option(help="-f hf: then upload the directory as this Hub dataset repo (needs the [hub] extra and a token: HF_TOKEN or `hf auth login`).")] = None,
    private: Annotated[bool, typer.Option("--private", help="With --push-to-hub: create the repo private.")] = False,
) -> None:
    """Export the training mix in a fine-tuning format, or as a Hugging Face dataset (optionally pushed to the Hub)."""
    if fmt != "hf":
        if push_to_hub or subset or test_size:
            fail("--push-to-hub, --subset and --test-size go with -f hf")
        from ..evolve.export import export

        target = out or Path("export.jsonl")
        try:
            n = export(run_dir, fmt, target)
        except (OSError, ValueError) as exc:  # OutputError (a directory, a device, a full disk) is both
            fail(str(exc))
        console.print(f"wrote {n} rows ({fmt}) to {target}")
        return

    from ..evolve.hub import HubError, export_hf
    from ..evolve.hub import push_to_hub as push

    if out is None:
        fail("-f hf needs -o DIR (the dataset directory to write)")
    try:
        info = export_hf(run_dir, out, license=license_id, test_size=test_size, seed=seed, subset=subset,
                         overwrite=overwrite, command=shlex.join(["evolinstruct", *sys.argv[1:]]), repo_id=push_to_hub)
    except (OSError, ValueError, HubError) as exc:
        fail(str(exc))
    splits = ", ".join(f"{name} {split['rows']:,}" for name, split in (info.get("splits") or {}).items())
    console.print(f"wrote a Hugging Face dataset to {out} ({splits or 'rows: ' + str(info.get('rows'))}); "
                  f"load it with datasets.load_dataset({str(out)!r})", highlight=False)
    if push_to_hub:
        try:
            url = push(out, push_to_hub, private=private)
        except (OSError, ValueError, HubError) as exc:
            fail(str(exc))
        console.print(f"pushed to {url}", highlight=False)
